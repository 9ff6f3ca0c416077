"""bench/bench_long_audio.py quality: the whole and the chunked embedding of real speech,
through the API, for ResNet34 (exact chunked path) and ECAPA (mean of chunks)."""
import argparse
import os
import re
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_long_audio  # noqa: E402


def test_quality_compares_whole_and_chunked_embeddings(tmp_path, capsys):
    args = argparse.Namespace(work=str(tmp_path), threads=torch.get_num_threads(),
                              minutes="0.05", chunk_seconds=1.0, ecapa_checkpoint="")
    bench_long_audio.cmd_quality(args)
    lines = capsys.readouterr().out.splitlines()
    cosines = {}
    for line in lines:
        found = re.match(r"(\w+) \(random weights\), 0.05 min real speech, chunks of 1 s: "
                         r"cosine\(whole, chunked\) = ([\d.]+), max \|diff\| / max \|whole\| = "
                         r"([\d.e+-]+)$", line)
        assert found, line
        cosines[found.group(1)] = float(found.group(2))
    assert set(cosines) == {"resnet34", "ecapa"}
    assert cosines["resnet34"] > 0.9999   # ResNet34's chunked path is exact
    assert 0.5 < cosines["ecapa"] <= 1.0
