"""Wall time of a small extraction by thread count, with the machine idle and with one
other CPU-bound process running (the default-thread question of issue 20).

    flock -x /tmp/wsp_cpu.lock python bench/bench_threads.py [--utts 40 --rounds 3]
        [--threads default,1,2]

Embeds the first ``--utts`` test utterances of the mini corpus with the mini
recipe's model (ECAPA_TDNN_c512, random weights; see bench_extract.py) through
``python -m wespeaker_py.bin.extract --batch_size 16 --num_workers 1 --device cpu``,
one process per run. ``--threads`` lists the settings: a number passes
``--num_threads N``, ``default`` passes nothing (wespeaker_py's default).
Before issue 20 every command computed with torch's own default, one thread per
core (``os.cpu_count()``), which is the setting of that number. "loaded" runs
the same commands while a ``while True: pass`` process keeps one core busy. Runs
alternate between settings; figures are wall seconds of the whole command
(start-up, model load, reading, fbank, model, writing).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_extract import test_set, write_model_folder  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(folder: str, data_list: str, out: str, threads: str) -> float:
    command = [sys.executable, "-m", "wespeaker_py.bin.extract",
               "--config", os.path.join(folder, "config.yaml"),
               "--model_path", os.path.join(folder, "avg_model.pt"), "--data_type", "raw",
               "--data_list", data_list, "--embed_ark", out, "--batch_size", "16",
               "--num_workers", "1", "--device", "cpu"]
    if threads != "default":
        command += ["--num_threads", threads]
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("OMP_NUM_THREADS", None)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="default,1,2")
    args = parser.parse_args()
    settings = args.threads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "model")
        write_model_folder(folder)
        data_list = os.path.join(tmp, "raw.list")
        utts = sorted(test_set().items())[:args.utts]
        with open(data_list, "w") as handle:
            for key, path in utts:
                handle.write(json.dumps({"key": key, "wav": path, "spk": "x"}) + "\n")
        times = {(load, t): [] for load in ("idle", "loaded") for t in settings}
        for _ in range(args.rounds):
            for load in ("idle", "loaded"):
                hog = None
                if load == "loaded":
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    for threads in settings:
                        out = os.path.join(tmp, f"x_{load}_{threads}.ark")
                        times[(load, threads)].append(run_once(folder, data_list, out,
                                                               threads))
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
        print(f"{len(utts)} utterances, {args.rounds} rounds, os.cpu_count()={os.cpu_count()}, "
              f"affinity={len(os.sched_getaffinity(0))}, loadavg={os.getloadavg()}")
        print("| machine | --num_threads | runs (s) | median (s) |")
        print("|---|---|---|---|")
        for (load, threads), runs in times.items():
            print(f"| {load} | {threads} | {', '.join(f'{r:.1f}' for r in runs)} | "
                  f"{statistics.median(runs):.1f} |")


if __name__ == "__main__":
    main()
