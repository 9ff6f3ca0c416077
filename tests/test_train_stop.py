"""A stop signal mid-epoch: the state is saved where it is, and the rerun retraces the run."""
import copy
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from train_helpers import TINY_CONFIG, load_checkpoint, plan_of, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.errors import WespeakerError
from wespeaker_py.train.curves import read_training_curves
from wespeaker_py.train.interrupt import (Lineage, TrainingStopped, find_interrupted,
                                          standing_of)
from wespeaker_py.train.step import TrainingStep


def _signal_at_step(monkeypatch, step_number, signum=signal.SIGUSR1):
    """Send ``signum`` to this process while training step ``step_number`` (from 1) runs."""
    original, calls = TrainingStep.__call__, []

    def step_then_signal(self, batch):
        calls.append(batch)
        if len(calls) == step_number:
            os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step_then_signal)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_run_stopped_mid_epoch_continues_as_if_never_stopped(corpus, tmp_path, monkeypatch,
                                                               num_workers):
    loader = {"batch_size": 4, "num_workers": num_workers, "pin_memory": False,
              "drop_last": True}
    settings = dict(num_epochs=3, log_batch_interval=2, dataloader_args=loader)
    full_dir, stopped_dir = str(tmp_path / "full"), str(tmp_path / "stopped")
    full = run_training(tiny_config(full_dir, corpus, **settings))
    per_epoch = full[0].batches
    assert per_epoch >= 5

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    _signal_at_step(monkeypatch, per_epoch + 3)   # batch 3 of epoch 2
    with pytest.raises(TrainingStopped, match=r"epoch 2 after its batch 3.*interrupted\.pt; "
                                              r"run the same command with --checkpoint "
                                              r".*model_1\.pt"):
        run_training(tiny_config(stopped_dir, corpus, **settings))
    monkeypatch.undo()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    models = os.path.join(stopped_dir, "models")
    assert sorted(os.listdir(models)) == ["interrupted.pt", "model_1.pt"]
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"], at["after_epoch"]) == (2, 3, 1)
    # another lineage (a run rolled back to another checkpoint), or another number of
    # ranks, does not take it
    interrupted = os.path.join(models, "interrupted.pt")
    standing = Lineage(1, load_checkpoint(os.path.join(models, "model_1.pt"))["param_digests"][0])
    assert find_interrupted(interrupted, standing, 1, per_epoch) is not None
    assert find_interrupted(interrupted, Lineage(1, "another run's digest"), 1, per_epoch) is None
    assert find_interrupted(interrupted, standing, 2, per_epoch) is None

    # the file itself given as --checkpoint would train batches 1-3 of epoch 2 twice
    with pytest.raises(WespeakerError, match=r"stopped in epoch 2 after its batch 3: it is "
                                             r"continued, not started from .* with "
                                             r"--checkpoint the epoch-1 checkpoint"):
        run_training(tiny_config(stopped_dir, corpus, checkpoint=interrupted, **settings))
    assert os.path.isfile(interrupted)

    torch.manual_seed(12345)  # disturb the generators: interrupted.pt must restore them
    resumed = run_training(tiny_config(stopped_dir, corpus,
                                       checkpoint=os.path.join(models, "model_1.pt"),
                                       **settings))
    assert [result.epoch for result in resumed] == [2, 3]
    assert resumed[0].batches == per_epoch
    assert resumed[0].loss == pytest.approx(full[1].loss, rel=1e-9)
    assert resumed[0].accuracy == pytest.approx(full[1].accuracy, rel=1e-9)
    expected = load_checkpoint(os.path.join(full_dir, "models", "model_3.pt"))
    got = load_checkpoint(os.path.join(models, "model_3.pt"))
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert not os.path.exists(os.path.join(models, "interrupted.pt"))   # model_2 replaced it
    log = open(os.path.join(stopped_dir, "train.log")).read()
    assert "training epochs 2 to 3 (epoch 2 from its batch 4)" in log
    # the curves keep the stopped run's first batches of epoch 2 and the rerun's rest
    curves = read_training_curves(os.path.join(stopped_dir, "train.log"))
    assert [b for e, b in sorted(curves.batches) if e == 2] == sorted(
        {2, 3} | set(range(4, per_epoch + 1, 2)) | {per_epoch})


def test_a_stop_at_an_epoch_end_without_a_checkpoint_saves_the_next_epoch_start(
        corpus, tmp_path, monkeypatch):
    settings = dict(num_epochs=3, save_epoch_interval=5, num_avg=1, log_batch_interval=100)
    exp_dir = str(tmp_path / "exp")
    full = run_training(tiny_config(str(tmp_path / "full"), corpus, **settings))
    per_epoch = full[0].batches
    _signal_at_step(monkeypatch, per_epoch, signal.SIGTERM)   # the last batch of epoch 1
    with pytest.raises(TrainingStopped, match=r"end of epoch 1, its state saved in .*"
                                              r"interrupted\.pt; run the same command to"):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    models = os.path.join(exp_dir, "models")
    assert os.listdir(models) == ["interrupted.pt"]   # epoch 1 is not one to keep
    resumed = run_training(tiny_config(exp_dir, corpus, **settings))   # the same command
    assert [result.epoch for result in resumed] == [2, 3]
    assert resumed[-1].loss == pytest.approx(full[-1].loss, rel=1e-9)
    assert sorted(os.listdir(models)) == ["final_model.pt", "model_3.pt"]


def test_a_start_from_bare_weights_is_known_by_their_digest():
    # e.g. the LM step's model_0.pt, remade from another avg_model.pt: another lineage
    weights = {"layer.weight": torch.ones(2, 3), "bn.num_batches_tracked": torch.tensor(7)}
    same = {key: value.clone() for key, value in weights.items()}
    other = dict(weights, **{"bn.num_batches_tracked": torch.tensor(8)})
    assert standing_of(None, weights, 0, "") == standing_of(None, same, 0, "")
    assert standing_of(None, weights, 0, "") != standing_of(None, other, 0, "")
    # random initial weights: known by what draws them (model, arguments, head, seed)
    assert standing_of(None, None, 0, "XVEC seed 42") == standing_of(None, None, 0,
                                                                     "XVEC seed 42")
    assert standing_of(None, None, 0, "XVEC seed 42") != standing_of(None, None, 0,
                                                                     "XVEC seed 99")
    checkpoint = {"param_digests": ["rank 0's", "rank 1's"]}
    assert standing_of(checkpoint, weights, 4, "") == Lineage(4, "rank 0's")


def test_a_new_run_from_scratch_with_another_seed_leaves_the_stopped_one_alone(
        corpus, tmp_path, monkeypatch, caplog):
    exp_dir = str(tmp_path / "exp")
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=loader)
    _signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingStopped, match="epoch 1 after its batch 3.*run the same "
                                              "command to continue"):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, corpus, seed=99, **settings))
    assert [result.batches for result in history] == [history[0].batches] * 2
    assert "training epochs 1 to 2\n" in open(os.path.join(exp_dir, "train.log")).read()
    assert any("interrupted.pt (stopped in epoch 1 after its batch 3)" in record.getMessage()
               and "not used" in record.getMessage() for record in caplog.records)


def test_a_rerun_with_other_settings_trains_the_stopped_epoch_again_from_its_start(
        corpus, tmp_path, monkeypatch, caplog):
    """E.g. a lower learning rate after a divergence: the stopped attempt is not continued.
    Settings that do not shape the weights (how often to log) do not count."""
    exp_dir = str(tmp_path / "exp")
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=loader)
    _signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingStopped):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    interrupted = os.path.join(exp_dir, "models", "interrupted.pt")
    at = load_checkpoint(interrupted)["interrupted_at"]
    assert at["settings"]["seed"] == TINY_CONFIG["seed"] and "exp_dir" not in at["settings"]
    for log_every in (2, 3):   # the same command, or one that logs more often, continues
        config = tiny_config(exp_dir, corpus, **dict(settings, log_batch_interval=log_every))
        plan = plan_of(config)
        assert plan.start.resume_at is not None

    lower_lr = copy.deepcopy(TINY_CONFIG["scheduler_args"])
    lower_lr["initial_lr"] /= 10
    with caplog.at_level(logging.INFO):
        history = run_training(tiny_config(exp_dir, corpus, scheduler_args=lower_lr,
                                           **dict(settings, log_batch_interval=3)))
    assert [result.batches for result in history] == [history[0].batches] * 2
    assert "training epochs 1 to 2\n" in open(os.path.join(exp_dir, "train.log")).read()
    warnings = [record.getMessage() for record in caplog.records
                if "other settings" in record.getMessage()]
    assert len(warnings) == 1 and "scheduler_args.initial_lr: " in warnings[0]
    assert "log_batch_interval" not in warnings[0]
    assert "(stopped in epoch 1 after its batch 3)" in warnings[0]
    assert "this run starts at epoch 1" in warnings[0]
    assert not os.path.exists(interrupted)   # the run's first checkpoint replaced it


_TWO_SIGNALS = """
import os, signal, sys, time
from wespeaker_py.train import interrupt
interrupt.REPEAT_GRACE_SECONDS = float(sys.argv[1])
with interrupt.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("still running, stop noted:", stop.signal_number == signal.SIGTERM)
"""


@pytest.mark.parametrize("grace,gap,survives", [(5.0, 0.005, True), (0.05, 0.2, False)])
def test_a_repeated_stop_signal_ends_the_run_only_after_the_grace_period(grace, gap,
                                                                         survives):
    # SLURM's SIGTERM and torchrun's copy of it reach a rank milliseconds apart: one request
    result = subprocess.run([sys.executable, "-c", _TWO_SIGNALS, str(grace), str(gap)],
                            capture_output=True, text=True, timeout=60)
    if survives:
        assert result.returncode == 0, result.stderr
        assert "still running, stop noted: True" in result.stdout
    else:
        assert result.returncode == -signal.SIGTERM and not result.stdout


def test_an_interrupt_the_run_does_not_catch_is_the_last_line_of_its_log(corpus, tmp_path,
                                                                         monkeypatch):
    def interrupted(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingStep, "__call__", interrupted)
    exp_dir = str(tmp_path / "exp")
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    last = open(os.path.join(exp_dir, "train.log")).read().splitlines()[-1]
    assert re.search(r"\bERROR\b.* training stopped: interrupted$", last), last
