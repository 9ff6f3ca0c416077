"""Peak memory and wall time of ``wespeaker-py embed`` on one long (1-hour) file.

    python bench/bench_long_audio.py make --work /tmp/wsp_long [--minutes 60]
    flock -x /tmp/wsp_cpu.lock python bench/bench_long_audio.py run --work /tmp/wsp_long \
        --tree /work/wt/longaudio [--models ecapa,resnet34]
    flock -x /tmp/wsp_cpu.lock python bench/bench_long_audio.py quality --work /tmp/wsp_long \
        [--minutes 5,10]
    flock -x /tmp/wsp_cpu.lock python bench/bench_long_audio.py onnx --work /tmp/wsp_long \
        [--seconds 301,600]

``make`` writes, under ``--work`` (never inside the repository): ``long.wav`` (``--name``), real
speech made by tiling the mini corpus's utterances (examples/mini/data/librispeech_tc100)
end to end up to ``--minutes``; ``ecapa/``, the mini recipe's model folder
(examples/mini/conf/ecapa_tdnn.yaml: ECAPA_TDNN_c512, random weights, as time and memory
do not depend on them); ``resnet34/`` (conf/resnet34.yaml's ResNet34, random weights).

``run`` times ``wespeaker-py embed --model <folder> long.wav --output out.npy`` with the
``wespeaker_py`` of ``--tree`` first on PYTHONPATH, under ``/usr/bin/time -v``, and prints
peak RSS (GB), wall seconds, CPU seconds (user + system: less sensitive than wall
time to other processes on a shared machine) and the load average before the run.

``quality`` compares, on real speech short enough to embed whole (``--minutes``), the
whole-utterance embedding with the chunked one (the threshold lowered through
``LongAudioPolicy``) for the ResNet34 (exact path) and the ECAPA models (the
mean-of-chunks approximation); ``--ecapa_checkpoint`` may name a trained ECAPA
checkpoint (the mini recipe's ``exp/.../models/model_3.pt``) to use instead of
random weights.

``onnx`` exports both models as waveform graphs (``<work>/<model>.onnx``, which ``run
--models resnet34.onnx`` then times) and prints, for real speech of each of
``--seconds``, the cosine between the folder's (torch) embedding and the graph's, both
with the default long-audio policy.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "examples", "mini", "data", "librispeech_tc100")
CONFIGS = {"ecapa": os.path.join(REPO, "examples", "mini", "conf", "ecapa_tdnn.yaml"),
           "resnet34": os.path.join(REPO, "conf", "resnet34.yaml")}
RATE = 16000


def speech(seconds: float) -> np.ndarray:
    """int16 real speech of ``seconds``: the corpus's utterances end to end, tiled."""
    with open(os.path.join(CORPUS, "wav.scp")) as handle:
        paths = [os.path.join(CORPUS, line.split()[1]) for line in handle if line.strip()]
    pieces, total, index = [], 0, 0
    wanted = int(seconds * RATE)
    while total < wanted:
        samples, rate = sf.read(paths[index % len(paths)], dtype="int16")
        assert rate == RATE, paths[index % len(paths)]
        pieces.append(samples)
        total += len(samples)
        index += 1
    return np.concatenate(pieces)[:wanted]


def write_model_folder(folder: str, name: str, checkpoint: str = "") -> None:
    """config.yaml + avg_model.pt (seeded random weights, or ``checkpoint``'s)."""
    from wespeaker_py.models import get_model
    with open(CONFIGS[name]) as handle:
        config = yaml.safe_load(handle)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    if checkpoint:
        shutil.copy(checkpoint, os.path.join(folder, "avg_model.pt"))
        return
    torch.manual_seed(0)
    model = get_model(config["model"], **config["model_args"]).eval()
    torch.save(model.state_dict(), os.path.join(folder, "avg_model.pt"))


def cmd_make(args: argparse.Namespace) -> None:
    os.makedirs(args.work, exist_ok=True)
    sf.write(os.path.join(args.work, args.name), speech(args.minutes * 60), RATE,
             subtype="PCM_16")
    for name in CONFIGS:
        write_model_folder(os.path.join(args.work, name), name)
    print(f"wrote {args.work}/{args.name} ({args.minutes} min) and model folders "
          f"{', '.join(CONFIGS)}")


def cmd_run(args: argparse.Namespace) -> None:
    tree, work = os.path.abspath(args.tree), os.path.abspath(args.work)
    env = dict(os.environ, PYTHONPATH=tree)
    wav = os.path.join(work, args.name)
    minutes = sf.info(wav).duration / 60
    for name in args.models.split(","):
        load = open("/proc/loadavg").read().split()[:3]
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "wespeaker_py.cli.main",
                   "embed", "--model", os.path.join(work, name), wav,
                   "--output", os.path.join(work, f"{name}.npy")]
        start = time.perf_counter()
        # run in the tree: 'python -m' puts the working directory before PYTHONPATH
        done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr[-3000:])
            raise SystemExit(f"{name}: exit {done.returncode}")
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                               done.stderr).group(1))
        cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr).group(1))
                  for kind in ("User", "System"))
        print(f"{name}: {minutes:.1f} min of audio, tree {args.tree}: peak RSS "
              f"{rss_kb / 1024 ** 2:.2f} GB, wall {wall:.1f} s, CPU (user+sys) {cpu:.0f} s, "
              f"load average before {' '.join(load)}", flush=True)


def cmd_quality(args: argparse.Namespace) -> None:
    from wespeaker_py import load_model
    from wespeaker_py.runtime.long_audio import LongAudioPolicy
    torch.set_num_threads(args.threads)
    for name in ("resnet34", "ecapa"):
        folder = os.path.join(args.work, f"{name}_quality")
        write_model_folder(folder, name, args.ecapa_checkpoint if name == "ecapa" else "")
        model = load_model(folder)
        backend = model.backend
        for minutes in [float(m) for m in args.minutes.split(",")]:
            wav = speech(minutes * 60)   # int16: the API reads it on the int16 scale
            backend.long_audio = LongAudioPolicy(threshold_seconds=1e9)
            whole = model.embed(wav, RATE)
            backend.long_audio = LongAudioPolicy(threshold_seconds=1.0,
                                                 chunk_seconds=args.chunk_seconds)
            chunked = model.embed(wav, RATE)
            cosine = float(whole @ chunked / np.linalg.norm(whole) / np.linalg.norm(chunked))
            rel = float(np.abs(whole - chunked).max() / np.abs(whole).max())
            weights = ("trained " + args.ecapa_checkpoint if name == "ecapa"
                       and args.ecapa_checkpoint else "random weights")
            print(f"{name} ({weights}), {minutes:g} min real speech, chunks of "
                  f"{args.chunk_seconds:g} s: cosine(whole, chunked) = {cosine:.6f}, "
                  f"max |diff| / max |whole| = {rel:.2e}", flush=True)


def cmd_onnx(args: argparse.Namespace) -> None:
    from wespeaker_py import load_model
    from wespeaker_py.api.exporting import export_waveform_graph
    torch.set_num_threads(args.threads)
    for name in ("ecapa", "resnet34"):
        folder = os.path.join(args.work, f"{name}_onnx")
        write_model_folder(folder, name, args.ecapa_checkpoint if name == "ecapa" else "")
        model = load_model(folder)
        graph_path = export_waveform_graph(model, os.path.join(args.work, f"{name}.onnx"))[0]
        graph = load_model(graph_path)
        weights = ("trained " + args.ecapa_checkpoint if name == "ecapa"
                   and args.ecapa_checkpoint else "random weights")
        for seconds in [float(s) for s in args.seconds.split(",")]:
            wav = speech(seconds)
            folder_emb, graph_emb = model.embed(wav, RATE), graph.embed(wav, RATE)
            cosine = float(folder_emb @ graph_emb / np.linalg.norm(folder_emb)
                           / np.linalg.norm(graph_emb))
            print(f"{name} ({weights}), {seconds:g} s real speech: cosine(folder, onnx) = "
                  f"{cosine:.6f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make")
    make.add_argument("--work", required=True)
    make.add_argument("--minutes", type=float, default=60)
    make.add_argument("--name", default="long.wav")
    run = sub.add_parser("run")
    run.add_argument("--work", required=True)
    run.add_argument("--tree", default=REPO)
    run.add_argument("--models", default="ecapa,resnet34")
    run.add_argument("--name", default="long.wav", help="the wav under --work to embed")
    quality = sub.add_parser("quality")
    quality.add_argument("--work", required=True)
    quality.add_argument("--minutes", default="5,10")
    quality.add_argument("--chunk_seconds", type=float, default=60)
    quality.add_argument("--threads", type=int, default=2)
    quality.add_argument("--ecapa_checkpoint", default="")
    onnx = sub.add_parser("onnx")
    onnx.add_argument("--work", required=True)
    onnx.add_argument("--seconds", default="301,600")
    onnx.add_argument("--threads", type=int, default=2)
    onnx.add_argument("--ecapa_checkpoint", default="")
    args = parser.parse_args()
    {"make": cmd_make, "run": cmd_run, "quality": cmd_quality,
     "onnx": cmd_onnx}[args.command](args)


if __name__ == "__main__":
    main()
