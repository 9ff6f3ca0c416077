"""bench/gpu_check.sh: its CPU dry run works end to end, and a bad step cannot sink the run."""
import os
import subprocess
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import gpu_check  # noqa: E402


def test_the_dry_run_records_every_step(tmp_path):
    output = str(tmp_path / "results_gpu.md")
    done = subprocess.run(["bash", os.path.join(REPO_ROOT, "bench", "gpu_check.sh"),
                           "--dry-run", "--output", output, "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = open(output).read()
    assert "Status: finished" in text
    for name, _, _ in gpu_check._steps(dry=True):
        assert f"| {name} | ok |" in text, name
        assert f"## {name}" in text
    assert "| ResNet34 | fp32 | 2 |" in text and "| ECAPA_TDNN_GLOB_c512 | bf16 | 2 |" in text
    assert "utterances/s" in text and "AS-Norm (s)" in text
    if not torch.cuda.is_available():
        assert "No CUDA GPU was found" in text
        assert "not run: 0 CUDA GPU(s), two are needed" in text


def test_only_runs_the_named_steps_with_the_given_workers(tmp_path):
    output = str(tmp_path / "results_gpu.md")
    script = os.path.join(REPO_ROOT, "bench", "gpu_check.sh")
    done = subprocess.run(["bash", script, "--dry-run", "--output", output, "--work",
                           str(tmp_path / "work"), "--workers", "0", "--only", "fbank",
                           "train ResNet34 fp32"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = open(output).read()
    ran = [line.split("|")[1].strip() for line in text.splitlines()
           if line.startswith("| ") and line.endswith(" |") and "| ok |" in line]
    assert ran == ["environment", "data", "train ResNet34 fp32", "fbank"]
    rows = [line for line in text.splitlines() if line.startswith("| ResNet34 | fp32 | 2 |")]
    assert len(rows) == 1 and rows[0].endswith("| 0 |")                  # its workers column
    assert "--workers 0 --only 'fbank' 'train ResNet34 fp32'" in text
    bad = subprocess.run(["bash", script, "--dry-run", "--only", "train ResNet99"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no step named 'train ResNet99'" in bad.stderr


def _sleeps(work, sizes):
    time.sleep(60)


def _fails(work, sizes):
    raise RuntimeError("this step broke")


def test_a_hanging_or_failing_step_is_recorded_and_the_run_goes_on(tmp_path):
    work = str(tmp_path)
    sizes = gpu_check.Sizes.dry()
    start = time.monotonic()
    status, text, _ = gpu_check._run_in_child("hang", _sleeps, work, sizes, 1.0, True, [])
    assert status == "timed out after 1 s" and time.monotonic() - start < 30
    status, text, _ = gpu_check._run_in_child("fail", _fails, work, sizes, 30.0, True, [])
    assert status == "failed" and "RuntimeError: this step broke" in text
