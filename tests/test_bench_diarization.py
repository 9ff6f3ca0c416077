"""The diarization benchmarks at a tiny size: bench/bench_diarization.py times each step of a
conversation and the whole diarize call; bench/diarization_eval.py embeds a set of
conversations once, then scores the clustering candidates, VAD settings and window pairs
on the cache."""
import math
import os
import sys

import torch

from api_helpers import MINI_CORPUS, wespeaker_folder
from wespeaker_py.diarization.synthetic import SpeakerCorpus, write_conversations

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_diarization  # noqa: E402
import diarization_eval  # noqa: E402


def table_rows(text: str, header: str):
    """The cells of the markdown table whose header row starts with ``header``."""
    lines = text.split(header, 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_bench_diarization_times_every_step(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_diarization.py", "--minutes", "0.25",
                                      "--model", "XVEC", "--batch", "8",
                                      "--threads", str(torch.get_num_threads())])
    bench_diarization.main()
    out = capsys.readouterr().out
    rows = table_rows(out, "| step |")
    assert [row[0].split(":")[0] for row in rows] == [
        "VAD", "VAD", "embeddings", "clustering", "clustering", "whole diarize (Silero, spectral)"]
    for row in rows:
        assert all(math.isfinite(float(cell)) and float(cell) >= 0 for cell in row[1:]), row
    assert "whole diarize, its own split: " in out


def test_diarization_eval_embeds_once_then_scores_the_cache(tmp_path, capsys):
    data, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    corpus = SpeakerCorpus(MINI_CORPUS, os.path.join(MINI_CORPUS, "test_spk"))
    keys = write_conversations(corpus, data, count=2, num_speakers=(2, 3), duration=20.0)
    model, _ = wespeaker_folder(str(tmp_path / "model"))
    run = diarization_eval.main
    run(["embed", "--data", data, "--cache", cache, "--model", model,
         "--threads", str(torch.get_num_threads())])
    assert sorted(os.listdir(cache)) == sorted(f"{key}.npz" for key in keys)
    capsys.readouterr()
    run(["score", "--data", data, "--cache", cache, "--calibration", data,
         "--calibration_cache", cache, "--output", str(tmp_path / "score.md")])
    rows = table_rows(open(tmp_path / "score.md").read(), "| method |")
    assert rows[0][0] == "reference: true window labels (the floor)"
    assert any(row[0].startswith("spectral-norm (the default") for row in rows)
    for row in rows:
        assert all(math.isfinite(float(cell)) for cell in row[1:5]), row
    run(["vad", "--data", data, "--cache", cache])
    assert len(table_rows(capsys.readouterr().out, "| threshold |")) == 30
    run(["pairs", "--data", data, "--cache", cache])
    rows = table_rows(capsys.readouterr().out, "| window pairs |")
    assert [row[0] for row in rows] == ["all", "full and pure", "full and pure, across regions",
                                        "short (both)"]
