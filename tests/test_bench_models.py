"""bench/bench_models.py: each model is timed at its recipe's input size (80 mel bins,
72 for ReDimNet, W2V-BERT's hidden states side by side), so every registered model runs."""
import math
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_models  # noqa: E402

MODELS = ["XVEC", "ReDimNet2B0", "W2VBert_Adapter_MFA"]


def test_each_model_gets_a_row_of_positive_finite_times(capsys):
    bench_models.main(["--models", *MODELS, "--batch", "2", "--frames", "20", "--warmup", "0",
                       "--iters", "1", "--threads", str(torch.get_num_threads())])
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == ["model", "forward (ms/sample)", "forward+backward (ms/sample)"]
    assert [row[0] for row in rows[1:]] == MODELS
    for row in rows[1:]:
        times = [float(cell) for cell in row[1:]]
        assert len(times) == 2 and all(math.isfinite(t) and t > 0 for t in times), row
