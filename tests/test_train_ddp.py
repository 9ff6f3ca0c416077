"""Two-process DDP training (gloo on CPU) through torchrun and the command line."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from train_helpers import RATE, make_speaker_corpus, plan_of, tiny_config, write_config
from wespeaker_py.config import read_yaml
from wespeaker_py.train import builder
from wespeaker_py.train.checkpoint import parameter_digest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _uneven_corpus(root):
    """32 utterances; rank 1's half holds 8 too short to use, so its share runs short.

    Without shuffling, rank 0 reads list lines 0, 2, 4, ... and rank 1 lines 1, 3, 5, ...
    """
    corpus = make_speaker_corpus(root, num_spks=4, utts_per_spk=6)
    with open(corpus["raw_list"]) as handle:
        usable = [json.loads(line) for line in handle]
    short = []
    for index in range(8):
        path = os.path.join(root, "wav", f"short{index}.wav")
        sf.write(path, np.zeros(RATE // 4, dtype=np.int16), RATE, subtype="PCM_16")
        short.append({"key": f"short{index}", "wav": path, "spk": f"spk{index % 4}"})
    rows = [row for pair in zip(usable[:8], short) for row in pair] + usable[8:]
    with open(corpus["raw_list"], "w") as raw, open(corpus["utt2spk"], "w") as utt2spk:
        for row in rows:
            raw.write(json.dumps(row) + "\n")
            utt2spk.write(f"{row['key']} {row['spk']}\n")
    return corpus


def test_two_ranks_train_to_the_end_with_identical_weights(tmp_path):
    corpus = _uneven_corpus(str(tmp_path / "data"))
    config = tiny_config("unused", corpus, num_epochs=2)
    config["dataset_args"]["shuffle"] = False
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    config_path = write_config(str(tmp_path / "tiny.yaml"), config)
    exp_dir = str(tmp_path / "exp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "wespeaker_py.bin.train",
               "--config", config_path, "--exp_dir", exp_dir, "--data_type", "raw",
               "--train_data", corpus["raw_list"], "--train_label", corpus["utt2spk"]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = open(os.path.join(exp_dir, "train.log")).read()
    assert "rank 0 of 2" in log and "epoch 2 done" in log
    # 32 utterances / 2 ranks / batch 8 = 2 batches per rank; rank 1 has usable data
    # for one only and repeats its share, so both ranks train both batches
    assert "2 batches per epoch on each of 2 ranks" in log
    assert "(4 batches over all ranks, 0 skipped)" in log

    checkpoint = torch.load(os.path.join(exp_dir, "models", "model_2.pt"), weights_only=False)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    # both ranks reported the digest of their parameters when the checkpoint was written
    rank0, rank1 = checkpoint["param_digests"]
    assert rank0 == rank1
    # ... and it is the digest of the weights that were saved
    model = builder.build_model(plan_of(read_yaml(os.path.join(exp_dir, "config.yaml"))))
    model.load_state_dict(checkpoint["model"])
    assert parameter_digest(model) == rank1
    # each rank keeps its own generator states (seeded with seed + rank)
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])


def _rank_pid(parent: int, rank: int, timeout: float = 60.0) -> int:
    """The pid of torchrun's worker ``rank`` (a child of ``parent``)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/environ", "rb") as handle:
                    environ = handle.read().split(b"\0")
            except OSError:
                continue
            if ppid == parent and f"RANK={rank}".encode() in environ:
                return int(name)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under {parent}")


STOP_TEST_EPOCHS = 5


def _torchrun_training(setup, exp_dir, *extra):
    """The command line of a 2-rank torchrun training of ``setup``'s config into ``exp_dir``."""
    corpus, config_path = setup
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", "-m", "wespeaker_py.bin.train",
            "--config", config_path, "--exp_dir", exp_dir, "--data_type", "raw",
            "--train_data", corpus["raw_list"], "--train_label", corpus["utt2spk"], *extra]


@pytest.fixture(scope="module")
def stop_test_run(tmp_path_factory):
    """A tiny corpus and config, and the folder of their uninterrupted 2-rank training."""
    root = tmp_path_factory.mktemp("ddp_stop")
    corpus = make_speaker_corpus(str(root / "data"), num_spks=4, utts_per_spk=12)
    config = tiny_config("unused", corpus, num_epochs=STOP_TEST_EPOCHS)
    config["dataloader_args"].update(batch_size=4, num_workers=1)   # 6 batches a rank
    for key in ("exp_dir", "train_data", "train_label", "data_type"):
        config.pop(key)
    setup = corpus, write_config(str(root / "tiny.yaml"), config)
    full_dir = str(root / "full")
    done = subprocess.run(_torchrun_training(setup, full_dir), cwd=REPO_ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return setup, full_dir


@pytest.mark.parametrize("target, signum", [("rank 1", "SIGUSR1"), ("torchrun", "SIGTERM")])
def test_a_stop_signal_stops_both_ranks_and_the_rerun_retraces_the_run(
        tmp_path, stop_test_run, target, signum):
    # SIGUSR1 to rank 1 alone: rank 0 hears nothing, so the ranks must agree. SIGTERM to
    # torchrun: it signals each rank's process group, loader workers included
    import signal
    import time
    setup, full_dir = stop_test_run
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(exp_dir, *extra):
        return _torchrun_training(setup, exp_dir, *extra)

    stopped_dir = str(tmp_path / "stopped")
    job = subprocess.Popen(command(stopped_dir), cwd=REPO_ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _rank_pid(job.pid, 1) if target == "rank 1" else job.pid
    log = os.path.join(stopped_dir, "train.log")
    while not (os.path.exists(log) and "epoch 2 batch 2/" in open(log).read()):
        assert job.poll() is None, job.communicate()[1][-3000:]
        time.sleep(0.02)
    os.kill(pid, getattr(signal, signum))
    _, stderr = job.communicate(timeout=300)
    assert job.returncode != 0
    # after the batch under way (batch 2 or 3 of epoch 2 unless a loaded machine let the ranks
    # run on)
    where = re.search(r"stopped on a signal at (epoch (\d) after its batch \d|the end of "
                      r"epoch (\d))", stderr)
    assert where, stderr[-3000:]
    epoch = int(where.group(2) or where.group(3))
    models = os.path.join(stopped_dir, "models")
    saved = sorted(os.listdir(models))
    assert epoch < STOP_TEST_EPOCHS and f"model_{epoch + 1}.pt" not in saved, saved
    assert ("interrupted.pt" in saved) == where.group(1).startswith("epoch "), saved
    epochs = [int(name[6:-3]) for name in saved if name.startswith("model_")]
    resume = ["--checkpoint", os.path.join(models, f"model_{max(epochs)}.pt")] if epochs else []
    done = subprocess.run(command(stopped_dir, *resume), cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = f"model_{STOP_TEST_EPOCHS}.pt"
    full = torch.load(os.path.join(full_dir, "models", last), weights_only=False)
    resumed = torch.load(os.path.join(models, last), weights_only=False)
    assert full["param_digests"] == resumed["param_digests"]
    assert "interrupted.pt" not in os.listdir(models)

    def epoch_lines(exp_dir):   # each epoch's loss and accuracy over both ranks
        return re.findall(r"epoch \d+ done: loss \S+ acc \S+",
                          open(os.path.join(exp_dir, "train.log")).read())

    assert epoch_lines(stopped_dir) == epoch_lines(full_dir)
