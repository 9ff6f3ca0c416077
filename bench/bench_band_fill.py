"""Verification on narrow-band audio with a wide-band model, with and without a band fill.

Learns a band fill for ``--heard_rate`` from ``--data`` (Kaldi directories of
wide-band speech, e.g. the model's training data) into a temporary file, then
embeds every utterance of ``--trials`` three ways and scores the trials by cosine
(no mean subtracted): at the model's rate; brought down to ``--heard_rate`` and
back, given to the model as model-rate audio (what it hears without a fill); and
the same call given at ``--heard_rate`` (the API fills the empty bins). With
``--onnx`` the model is also exported as a waveform graph (``export --with_frontend``)
with the fill beside it, and the call is embedded through the graph too. Appends a
table to ``--output``.

    python bench/bench_band_fill.py --model MODEL --data data/train data/backend \\
        --wav_scp examples/mini/data/librispeech_tc100/wav.scp \\
        --trials examples/mini/data/librispeech_tc100/trials --output results.md [--onnx]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from wespeaker_py import load_model
from wespeaker_py.api.exporting import export_waveform_graph
from wespeaker_py.audio import INT16_SCALE, load_audio, narrowband, resample
from wespeaker_py.scoring.metrics import compute_eer, compute_min_dcf
from wespeaker_py.utils.tables import read_wav_scp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", nargs="+", required=True, help="wide-band data directories")
    parser.add_argument("--wav_scp", required=True)
    parser.add_argument("--trials", required=True, help="enroll test target|nontarget")
    parser.add_argument("--heard_rate", type=int, default=8000)
    parser.add_argument("--output", required=True, help="markdown file to append to")
    parser.add_argument("--onnx", action="store_true",
                        help="also through the exported waveform ONNX graph with the fill")
    args = parser.parse_args()

    model = load_model(args.model, device="cpu")
    rate = model.sample_rate
    scratch = tempfile.TemporaryDirectory()
    clock = time.perf_counter()
    fill = model.train_band_fill(args.data, args.heard_rate,
                                 output=os.path.join(scratch.name, "fill.npz"), progress=False)
    learn_seconds = time.perf_counter() - clock
    # learnt outside the model's folder, so handed to it here (the model folder stays as is)
    model.backend.set_band_fills([fill])
    graph = None
    if args.onnx:
        graph_path = os.path.join(scratch.name, "model.onnx")
        export_waveform_graph(model, graph_path)   # the fill in use goes beside it
        graph = load_model(graph_path)

    trials = [line.split() for line in open(args.trials) if line.strip()]
    labels = np.array([label == "target" for _, _, label in trials])
    needed = {key for enroll, test, _ in trials for key in (enroll, test)}
    base = os.path.dirname(os.path.abspath(args.wav_scp))
    paths = {key: path if os.path.isabs(path) or path.endswith("|") else os.path.join(base, path)
             for key, path in read_wav_scp(args.wav_scp).items() if key in needed}
    ways = {"model rate": {}, "narrow-band, no fill": {}, "narrow-band, band fill": {}}
    if graph is not None:
        ways["narrow-band, band fill, ONNX graph"] = {}
    for key, path in sorted(paths.items()):
        wide = load_audio(path, rate) / np.float32(INT16_SCALE)
        call = resample(wide, float(rate), float(args.heard_rate))
        ways["model rate"][key] = model.embed(wide, rate)
        ways["narrow-band, no fill"][key] = model.embed(narrowband(wide, args.heard_rate, rate),
                                                        rate)
        ways["narrow-band, band fill"][key] = model.embed(call, args.heard_rate)
        if graph is not None:
            ways["narrow-band, band fill, ONNX graph"][key] = graph.embed(call, args.heard_rate)
    scratch.cleanup()

    lines = [f"\n#### {args.model}, {len(trials)} trials ({int(labels.sum())} target), "
             f"heard at {args.heard_rate} Hz\n",
             f"Band fill: {fill.describe()} (learnt in {learn_seconds:.1f} s).\n",
             "| audio | EER (%) | minDCF (0.01) |", "|:--|--:|--:|"]
    if graph is not None:
        gap = max(float(np.abs(ways["narrow-band, band fill, ONNX graph"][key]
                               - ways["narrow-band, band fill"][key]).max()) for key in paths)
        lines.insert(2, f"ONNX graph against torch, band-filled calls: largest embedding "
                        f"difference {gap:.2g}.\n")
    for name, embeddings in ways.items():
        units = {key: vector / np.linalg.norm(vector) for key, vector in embeddings.items()}
        scores = np.array([units[enroll] @ units[test] for enroll, test, _ in trials])
        lines.append(f"| {name} | {100 * compute_eer(scores, labels):.2f} | "
                     f"{compute_min_dcf(scores, labels):.3f} |")
    with open(args.output, "a") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
