"""Per-seed table of the side-by-side runs (issue 24).

    SBS_DIR=SCRATCH python bench/sbs_table.py

Reads each seed's scores (``$SBS_DIR/scores/ours-sN/metrics.txt`` and
``ws-sN``; WeSpeaker's seed 1 is ``ref-s1``) and both codes' training logs (through
``wespeaker_py.train.curves``, so an epoch redone by a resume counts once), and
prints the markdown table of bench/results_side_by_side.md: EER of cosine minus
the back-end mean and of plain cosine, accuracy per epoch, and the paired
difference per seed with its standard error. Seeds with only one side are left out.
"""
from __future__ import annotations

import os
import re
import statistics
from typing import List, Optional

from wespeaker_py.train.curves import read_training_curves

MAX_SEED = 20


def read_eers(sbs_dir: str, tag: str) -> Optional[List[float]]:
    """[cosine - mean EER, plain cosine EER] of one run, or None before it is scored."""
    path = os.path.join(sbs_dir, "scores", tag, "metrics.txt")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        values = [float(value) for value in re.findall(r"EER = ([\d.]+)", handle.read())]
    return values[:2] if len(values) >= 2 else None


def wespeaker_accuracy(sbs_dir: str, tag: str) -> List[float]:
    """Each epoch's accuracy: the last row WeSpeaker's table prints for the epoch."""
    curves = read_training_curves(os.path.join(sbs_dir, "refexp", f"train_{tag}.err"))
    return [point[3] for _, point in sorted(curves.last_points().items())]


def our_accuracy(sbs_dir: str, seed: int) -> List[float]:
    """Each epoch's accuracy from our trainer's "epoch N done" lines."""
    curves = read_training_curves(os.path.join(sbs_dir, "ours", "examples", "mini", "exp",
                                               f"sbs-s{seed}", "train.log"))
    return [curves.epochs[epoch][1] for epoch in sorted(curves.epochs)]


def mean_sd(values: List[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired(differences: List[float]) -> str:
    """Mean difference ± its standard error."""
    error = statistics.stdev(differences) / len(differences) ** 0.5
    return f"{statistics.mean(differences):+.2f} ± {error:.2f}"


def main() -> None:
    sbs_dir = os.environ["SBS_DIR"]
    rows = []
    for seed in range(1, MAX_SEED + 1):
        ws_tag = "ref-s1" if seed == 1 else f"ws-s{seed}"
        ours, theirs = read_eers(sbs_dir, f"ours-s{seed}"), read_eers(sbs_dir, ws_tag)
        if ours and theirs:
            rows.append((seed, ours, theirs, our_accuracy(sbs_dir, seed),
                         wespeaker_accuracy(sbs_dir, ws_tag)))
    print("| seed | ours cos - mean | WeSpeaker cos - mean | difference | ours cos "
          "| WeSpeaker cos | ours acc 1-6 | WeSpeaker acc 1-6 |")
    print("|--:|--:|--:|--:|--:|--:|:--|:--|")
    for seed, ours, theirs, our_acc, their_acc in rows:
        print(f"| {seed} | {ours[0]:.2f} | {theirs[0]:.2f} | {ours[0] - theirs[0]:+.2f} "
              f"| {ours[1]:.2f} | {theirs[1]:.2f} | {', '.join(f'{a:.1f}' for a in our_acc)} "
              f"| {', '.join(f'{a:.1f}' for a in their_acc)} |")
    if len(rows) < 2:
        return
    column = lambda side, measure: [row[side][measure] for row in rows]  # noqa: E731
    finals = lambda side: [row[side][-1] for row in rows]  # noqa: E731
    print(f"| mean ± sd | {mean_sd(column(1, 0))} | {mean_sd(column(2, 0))} "
          f"| **{paired([a - b for a, b in zip(column(1, 0), column(2, 0))])}** (se) "
          f"| {mean_sd(column(1, 1))} | {mean_sd(column(2, 1))} "
          f"| final {mean_sd(finals(3))} | final {mean_sd(finals(4))} |")
    print(f"\nPlain cosine, paired difference: "
          f"{paired([a - b for a, b in zip(column(1, 1), column(2, 1))])} (se); "
          f"final accuracy: {paired([a - b for a, b in zip(finals(3), finals(4))])} "
          f"points; {len(rows)} seeds.")


if __name__ == "__main__":
    main()
