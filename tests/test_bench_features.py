"""The front-end benchmarks at a tiny size: our fbank next to kaldi-native-fbank
(bench_fbank.py); Whisper's log-mel (bench_whisper.py) and W2V-BERT's input features
(bench_w2vbert.py) within rounding of the reference implementations; the tiny WavLM
front-end frozen and joint, and the training step the CUDA mode times (bench_ssl.py)."""
import argparse
import math
import os
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import bench_ssl  # noqa: E402
import bench_whisper  # noqa: E402


@pytest.fixture(autouse=True)
def threads():
    """The benchmarks set torch's thread count: give the test session's back."""
    count = torch.get_num_threads()
    yield count
    torch.set_num_threads(count)


def table(text: str):
    """The cells of the rows of the markdown table in ``text``, header and rule left out."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[2:]


def test_bench_fbank_times_ours_and_kaldi_native_fbank(monkeypatch, capsys, threads):
    pytest.importorskip("kaldi_native_fbank")
    import bench_fbank
    monkeypatch.setattr(sys, "argv", ["bench_fbank.py", "--batch", "2", "--seconds", "0.5",
                                      "--repeats", "1", "--threads", str(threads)])
    bench_fbank.main()
    rows = table(capsys.readouterr().out)
    assert [row[0] for row in rows] == [
        f"wespeaker_py fbank (batched, {threads} threads)",
        "wespeaker_py fbank (batched, 1 thread)",
        f"wespeaker_py fbank (batched, {threads} threads, dither 1.0)",
        "kaldi-native-fbank, compute only (per utterance)",
        "kaldi-native-fbank, compute + get_frame (per utterance)"]
    for row in rows:
        assert float(row[1]) >= 0 and float(row[2].replace(",", "")) > 0, row


def test_bench_whisper_features_match_whispers_loop_and_transformers():
    rows = bench_whisper.feature_rows(batch=2, seconds=1.0, repeats=1)
    assert [name for name, _, _ in rows][:2] == [
        "WhisperLogMel, the batch at once (ours)",
        "Whisper's log_mel_spectrogram, one utterance at a time (WeSpeaker's loop)"]
    for name, seconds, difference in rows:
        assert math.isfinite(seconds) and difference < 1e-5, name


def test_bench_w2vbert_features_match_the_processor(capsys, threads):
    pytest.importorskip("transformers")
    import bench_w2vbert
    bench_w2vbert.features(argparse.Namespace(batch=2, seconds=1.0, threads=threads,
                                              repeats=1))
    rows = table(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["Hugging Face processor (numpy, per utterance)",
                                        "W2VBertFeatures, float64 (default)",
                                        "W2VBertFeatures, float32"]
    assert all(float(row[2]) < 1e-4 for row in rows), rows


def test_bench_ssl_times_the_tiny_wavlm_and_trains_in_the_cuda_modes_step(capsys, threads):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config
    bench_ssl.bench_cpu(argparse.Namespace(threads=threads, batch=2, seconds=0.5, repeats=1))
    rows = table(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["frozen (forward, no_grad)", "joint (forward + backward)"]
    assert all(float(row[1]) > 0 for row in rows)
    for frozen in (True, False):
        frontend = bench_ssl.make_frontend(tiny_wavlm_config(), frozen=frozen)
        step = bench_ssl.TrainStep(frontend, num_class=10, batch=2, samples=8000, device="cpu")
        before = {name: value.clone() for name, value in step.model.named_parameters()}
        step()
        changed = {name for name, value in step.model.named_parameters()
                   if not torch.equal(value, before[name])}
        assert any(name.startswith("projection.") for name in changed)
        # the layer weights train either way; the encoder only in the joint mode
        assert "frontend.layer_weights" in changed
        assert any(name.startswith("frontend.") and name != "frontend.layer_weights"
                   for name in changed) != frozen
