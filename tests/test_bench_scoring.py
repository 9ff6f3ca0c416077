"""bench/bench_scoring.py at a tiny size: every stage (in memory, through the score and
score_norm commands on files, PLDA, QMF on files) runs against today's scoring API and gets
its row."""
import math
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_scoring  # noqa: E402


def test_every_stage_gets_a_row(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench_scoring, "ROWS", [])
    monkeypatch.setattr(sys, "argv", [
        "bench_scoring.py", "--threads", str(torch.get_num_threads()), "--num-utts", "300",
        "--dim", "16", "--cohort", "40", "--top-n", "10", "--trials-e", "500",
        "--trials-h", "400", "--plda-embeddings", "300", "--plda-speakers", "20",
        "--plda-iters", "2", "--trials-qmf", "300", "--stages", "memory,files,plda,qmf",
        "--work-dir", str(tmp_path)])
    bench_scoring.main()
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in out.split("| stage |", 1)[1].splitlines()[2:]]
    assert [row[0] for row in rows] == [
        "cosine, vox1-E (500 trials)", "AS-Norm top-10, cohort 40, vox1-E",
        "cosine, vox1-H (400 trials)", "AS-Norm top-10, cohort 40, vox1-H",
        "write xvector.ark/scp (300 embeddings)", "bin.score (files), vox1-E",
        "bin.score_norm asnorm (files), vox1-E", "bin.score (files), vox1-H",
        "bin.score_norm asnorm (files), vox1-H", "PLDA train, 300 x 16, 20 spk, 2 EM iters",
        "PLDA LLR scoring, vox1-E (500 trials)",
        "QMF gather_calibration_factors (300 trials)", "QMF train_calibration_model",
        "QMF infer_calibration"]
    for row in rows:
        assert all(math.isfinite(float(cell)) and float(cell) >= 0 for cell in row[1:]), row
    assert os.listdir(tmp_path) == []   # the files and qmf stages remove their folders
