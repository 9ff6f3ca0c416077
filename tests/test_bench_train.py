"""bench/bench_train.py: the trainer's step, built from conf/ as the benchmark builds it, is
timed in each of --sync_compare's variants, and 'no rollback' does replace the step's
rollback."""
import math
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_train  # noqa: E402


def test_sync_compare_times_the_step_in_every_variant(capsys, monkeypatch):
    snapshots = []
    monkeypatch.setattr(bench_train._NoRollback, "snapshot", lambda self: snapshots.append(1))
    bench_train.sync_compare(["ecapa_tdnn_c512"], torch.device("cpu"), batch=2, warmup=0,
                             iterations=1, rounds=1)
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == ["model", "round"] + [f"{variant} (ms/step)"
                                            for variant in bench_train.STEP_VARIANTS]
    assert rows[1][:2] == ["ECAPA_TDNN_GLOB_c512", "1"]
    times = [float(cell) for cell in rows[1][2:]]
    assert len(times) == 3 and all(math.isfinite(t) and t > 0 for t in times), rows[1]
    assert snapshots == [1]   # the one timed step of 'no rollback' went through its stand-in
