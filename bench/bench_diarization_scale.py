"""Time and peak memory of each clustering method on long recordings (synthetic embeddings).

One hour of speech is about 4,800 windows (1.5 s every 0.75 s); four hours
about 19,200. The embeddings are drawn around ``--speakers`` random centres
(192 dimensions, cosine about 0.65 within a speaker), so the clustering does
the work it would do on a real recording of that length. Each (method, size)
runs in a fresh process, whose peak resident memory (``ru_maxrss``) is reported.

    flock -x /tmp/wsp_cpu.lock python bench/bench_diarization_scale.py --hours 1 4 \\
        --output bench/results_diarization_scale.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WINDOWS_PER_HOUR = 4800


def child(method: str, count: int, speakers: int, threads: int) -> None:
    """Run one clustering in this process and print a JSON line."""
    import resource
    import numpy as np
    from wespeaker_py.diarization.clustering import ClusterOptions, cluster_windows
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((speakers, 192))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, speakers, size=count)
    embeddings = centres[truth] + 0.05 * rng.standard_normal((count, 192))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clock = time.perf_counter()
    result = cluster_windows(embeddings, ClusterOptions(method), max_speakers=20)
    seconds = time.perf_counter() - clock
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "before_mb": before / 1024,
                      "found": result.num_speakers}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--methods", nargs="+",
                        default=["spectral", "spectral-norm", "nme-sc", "umap-hdbscan",
                                 "agglomerative"])
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--output")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.speakers, args.threads)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               NUMBA_NUM_THREADS=str(args.threads))
    lines = ["| method | hours | windows | seconds | peak memory (MB) | speakers found |",
             "|---|---|---|---|---|---|"]
    for hours in args.hours:
        count = int(hours * WINDOWS_PER_HOUR)
        for method in args.methods:
            try:
                done = subprocess.run([sys.executable, __file__, "--child", method, str(count),
                                       "--speakers", str(args.speakers)], env=env, check=True,
                                      capture_output=True, text=True, timeout=args.timeout)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                lines.append(f"| {method} | {hours:g} | {count} | {row['seconds']:.1f} | "
                             f"{row['peak_mb']:.0f} | {row['found']}/{args.speakers} |")
            except subprocess.TimeoutExpired:
                lines.append(f"| {method} | {hours:g} | {count} | > {args.timeout:.0f} "
                             f"(stopped) | | |")
            except subprocess.CalledProcessError as err:
                lines.append(f"| {method} | {hours:g} | {count} | failed: "
                             f"{err.stderr.strip().splitlines()[-1]} | | |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
