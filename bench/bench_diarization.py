"""Real-time factor of diarization on the CPU, step by step, on a synthetic conversation.

    python bench/bench_diarization.py [--minutes 10] [--speakers 3] [--threads 2] \\
        [--model ECAPA_TDNN_GLOB_c512 | --model_dir EXP] [--batch 32]

Builds one conversation from the embedded corpus's test speakers, then times
each step on it: VAD (Silero ONNX and the energy detector), windowing +
embedding (a randomly initialised registry model with its default arguments
and 80-dim fbank -- the cost does not depend on the weights -- or a trained
model through ``load_model``), clustering (spectral and agglomerative), and
the whole ``Diarizer.diarize`` call. RTF = seconds of compute / seconds of
audio. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from wespeaker_py.audio import INT16_SCALE
from wespeaker_py.diarization import DiarizationOptions, Diarizer
from wespeaker_py.diarization.clustering import cluster
from wespeaker_py.diarization.segmentation import subsegments
from wespeaker_py.diarization.synthetic import SpeakerCorpus, build_conversation
from wespeaker_py.diarization.vad import EnergyVAD, SileroVAD

SR = 16000
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "mini", "data", "librispeech_tc100")


def random_model_embed(name: str, batch: int):
    from wespeaker_py.api.model import SpeakerModel
    from wespeaker_py.frontend.features import FbankFeatures
    from wespeaker_py.models import get_model
    from wespeaker_py.runtime import SpeakerEmbedder, TorchBackend
    network = get_model(name, feat_dim=80, embed_dim=192 if "ECAPA" in name else 256).eval()
    backend = TorchBackend(SpeakerEmbedder(FbankFeatures(num_mel_bins=80), network),
                           torch.device("cpu"))
    model = SpeakerModel(backend, name, "random weights")
    return model.diarizer(batch_size=batch).embed_windows


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="ECAPA_TDNN_GLOB_c512")
    parser.add_argument("--model_dir", default=None, help="a trained model for load_model")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus = SpeakerCorpus(CORPUS, os.path.join(CORPUS, "test_spk"))
    rng = np.random.default_rng(0)
    speakers = list(rng.choice(corpus.speakers, size=args.speakers, replace=False))
    audio, _ = build_conversation(corpus, speakers, 60.0 * args.minutes, rng)
    duration = audio.size / SR
    if args.model_dir:
        from wespeaker_py import load_model
        model = load_model(args.model_dir, device="cpu")
        embed, model_name = model.diarizer(batch_size=args.batch).embed_windows, model.name
    else:
        embed, model_name = random_model_embed(args.model, args.batch), args.model

    rows = []
    silero = SileroVAD()
    speech, seconds = timed(silero, audio, SR)
    rows.append(("VAD: Silero (ONNX, 1 thread)", seconds))
    _, seconds = timed(EnergyVAD(), audio, SR)
    rows.append(("VAD: energy", seconds))
    windows = subsegments(speech)
    samples = audio * np.float32(INT16_SCALE)  # what the model is fed
    pieces = [np.resize(samples[int(a * SR):int(b * SR)], int(1.5 * SR)) for a, b in windows]
    embed(pieces[:args.batch])  # warm-up
    embeddings, seconds = timed(embed, pieces)
    rows.append((f"embeddings: {model_name}, {len(windows)} windows of 1.5 s, "
                 f"batch {args.batch}", seconds))
    for method in ("spectral", "agglomerative"):
        cluster(embeddings[:20], method)  # warm-up (imports scikit-learn)
        labels, seconds = timed(cluster, embeddings, method)
        rows.append((f"clustering: {method} ({len(set(labels))} speakers found)", seconds))
    diarizer = Diarizer(embed, DiarizationOptions(vad="silero"), silero)
    result, seconds = timed(diarizer.diarize, audio, SR)
    rows.append(("whole diarize (Silero, spectral)", seconds))

    print(f"{duration / 60:.1f} min conversation, {args.speakers} speakers, "
          f"{sum(b - a for a, b in speech) / 60:.1f} min of speech found; "
          f"torch threads {args.threads}\n")
    print("| step | seconds | RTF |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / duration:.4f} |")
    print("\nwhole diarize, its own split: " + ", ".join(
        f"{step} {value:.2f} s" for step, value in result.seconds.items()))


if __name__ == "__main__":
    main()
