"""A stop signal mid-epoch: the state is saved where it is, and the rerun retraces the run."""
import copy
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data._utils import signal_handling

from train_helpers import TINY_CONFIG, load_checkpoint, plan_of, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.dataset.dataset import Dataset
from wespeaker_py.errors import WespeakerError
from wespeaker_py.train.curves import read_training_curves
from wespeaker_py.train import loop
from wespeaker_py.train.interrupt import (Lineage, StopRequest, TrainingStopped,
                                          find_interrupted, standing_of)
from wespeaker_py.train.step import TrainingStep
from wespeaker_py.train.trainer import DataLoaderFailedError


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


def _sigint(handler):
    """Set SIGINT's handler for the body, whatever pytest's own (a background job's is
    SIG_IGN), and put that back after."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigint_as_at_a_terminal():
    """SIGINT as Python sets it in a process started at a terminal: KeyboardInterrupt."""
    yield from _sigint(signal.default_int_handler)


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored, as in a shell's background job or under nohup-like starters."""
    yield from _sigint(signal.SIG_IGN)


def test_a_ctrl_c_mid_epoch_saves_the_state_and_says_how_to_continue(
        corpus, tmp_path, monkeypatch, caplog, sigint_as_at_a_terminal):
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=loader)
    exp_dir = str(tmp_path / "exp")
    _signal_at_step(monkeypatch, 3, signal.SIGINT)   # batch 3 of epoch 1's 6
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.train.interrupt"), \
            pytest.raises(TrainingStopped, match=r"epoch 1 after its batch 3, its state saved "
                                                 r"in .*interrupted\.pt; run the same command"):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # put back
    assert "got SIGINT" in caplog.text and "press Ctrl-C again after 5 s" in caplog.text
    at = load_checkpoint(os.path.join(exp_dir, "models", "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"]) == (1, 3)
    last = open(os.path.join(exp_dir, "train.log")).read().splitlines()[-1]
    assert re.search(r"\bERROR\b.* training stopped: stopped on a signal at epoch 1 ", last)


def test_a_ctrl_c_while_spawned_loader_workers_start_stops_the_run_not_the_workers(
        corpus, tmp_path, monkeypatch, sigint_as_at_a_terminal):
    # Ctrl-C reaches every process of the terminal's group: the training process and its
    # loader workers, which a spawned worker gets while it still imports torch (it ignores
    # the signal only in its worker_init_fn); sent to each here, not to pytest's group
    loader = {"batch_size": 4, "num_workers": 1, "pin_memory": False, "drop_last": True,
              "multiprocessing_context": "spawn"}
    exp_dir = str(tmp_path / "exp")
    start_epoch_data = loop._start_epoch_data

    def start_then_ctrl_c(*args, **kwargs):
        started = start_epoch_data(*args, **kwargs)
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return started

    monkeypatch.setattr(loop, "_start_epoch_data", start_then_ctrl_c)
    with pytest.raises(TrainingStopped, match=r"stopped on a signal at epoch 1 after its "
                                              r"batch 1, its state saved in .*interrupted\.pt"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=1, log_batch_interval=2,
                                 dataloader_args=loader))


def test_an_ignored_sigint_is_left_ignored_while_training_runs(sigint_ignored):
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._note   # the other stops are taken
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.signal_number is None
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


_TWO_SIGNALS = """
import os, signal, sys, time
from wespeaker_py.train import interrupt
interrupt.REPEAT_GRACE_SECONDS = float(sys.argv[1])
signum = getattr(signal, sys.argv[3])
with interrupt.StopRequest() as stop:
    os.kill(os.getpid(), signum)
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), signum)
    time.sleep(0.2)
    print("still running, stop noted:", stop.signal_number == signum)
"""


def _two_signals(grace: float, gap: float, signame: str, sigint) -> subprocess.CompletedProcess:
    """Run _TWO_SIGNALS in a Python started with SIGINT set to ``sigint`` (SIG_DFL: Python
    installs its KeyboardInterrupt handler, as at a terminal; SIG_IGN: a background job),
    whatever this process's own SIGINT is."""
    return subprocess.run([sys.executable, "-c", _TWO_SIGNALS, str(grace), str(gap), signame],
                          preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("grace,gap,survives", [(5.0, 0.005, True), (0.05, 0.2, False)])
def test_a_repeated_stop_signal_ends_the_run_only_after_the_grace_period(grace, gap,
                                                                         survives, signame):
    # SLURM's SIGTERM and torchrun's copy of it reach a rank milliseconds apart, as a
    # terminal's Ctrl-C and torchrun's copy do where the ranks share the terminal: one request
    result = _two_signals(grace, gap, signame, signal.SIG_DFL)
    if survives:
        assert result.returncode == 0, result.stderr
        assert "still running, stop noted: True" in result.stdout
    else:   # a second Ctrl-C is Python's KeyboardInterrupt, which ends Python by SIGINT
        assert result.returncode == -getattr(signal, signame) and not result.stdout
        assert ("KeyboardInterrupt" in result.stderr) == (signame == "SIGINT")


def test_a_process_started_with_sigint_ignored_goes_on_ignoring_it():
    # two SIGINTs past the grace period would end a process that took SIGINT over
    result = _two_signals(0.05, 0.2, "SIGINT", signal.SIG_IGN)
    assert result.returncode == 0, result.stderr
    assert "still running, stop noted: False" in result.stdout and "got SIGINT" not in \
        result.stderr


@pytest.fixture
def forget_torch_sigchld(monkeypatch):
    """A call that sets SIGCHLD as in a fresh process, where torch installs its check of
    the loader workers when the first iterator with workers starts (once per process);
    the handler there was comes back after the test."""
    previous = signal.getsignal(signal.SIGCHLD)

    def forget():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        monkeypatch.setattr(signal_handling, "_SIGCHLD_handler_set", False)

    yield forget
    signal.signal(signal.SIGCHLD, previous)


def _kill_worker_at_step(monkeypatch, step_number: int) -> None:
    """SIGKILL the loader's worker while training step ``step_number`` (from 1) runs (the
    kernel's out-of-memory killer's way), and wait until it is dead."""
    original, calls, started = TrainingStep.__call__, [], []
    set_worker_pids = signal_handling._set_worker_pids

    def note_workers(key, pids):
        started.append(pids)
        return set_worker_pids(key, pids)

    def step_then_kill(self, batch):
        calls.append(batch)
        if len(calls) == step_number:
            (worker,) = started[-1]   # the epoch's iterator's one worker
            os.kill(worker, signal.SIGKILL)
            # until all its threads have ended and it can be waited for (not reaped here)
            deadline = time.monotonic() + 30
            while os.waitid(os.P_PID, worker, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        return original(self, batch)

    monkeypatch.setattr(signal_handling, "_set_worker_pids", note_workers)
    monkeypatch.setattr(TrainingStep, "__call__", step_then_kill)


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


@pytest.mark.parametrize("kill_epoch", [1, 2])
def test_a_killed_loader_worker_ends_the_run_with_the_state_of_its_last_batch(
        corpus, tmp_path, monkeypatch, forget_torch_sigchld, kill_epoch):
    loader = {"batch_size": 4, "num_workers": 1, "pin_memory": False, "drop_last": True}
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=loader)
    full_dir, exp_dir = str(tmp_path / "full"), str(tmp_path / "exp")
    per_epoch = run_training(tiny_config(full_dir, corpus, **settings))[0].batches
    # epoch 1 meets torch's handler installed by its own loader, epoch 2 the one before it
    forget_torch_sigchld()
    _kill_worker_at_step(monkeypatch, (kill_epoch - 1) * per_epoch + 3)
    resume = "with --checkpoint .*model_1\\.pt" if kill_epoch == 2 else "to continue"
    # torch names the signal, or, where the main process met the dead worker's half-sent
    # batch first, says it exited
    with pytest.raises(DataLoaderFailedError, match=(
            rf"^the training data loader failed at epoch {kill_epoch} after its batch 3: "
            r"DataLoader worker \(pid(\(s\))? \d+\) (is killed by signal: Killed|exited "
            r"unexpectedly).* \(.*out-of-memory.* fewer dataloader_args\.num_workers or a "
            r"smaller dataloader_args\.prefetch_factor .*\); the state after batch 3 is saved "
            rf"in .*interrupted\.pt: run the same command {resume}")):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    models = os.path.join(exp_dir, "models")
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"]) == (kill_epoch, 3)
    checkpoint = os.path.join(models, "model_1.pt") if kill_epoch == 2 else None
    resumed = run_training(tiny_config(exp_dir, corpus, checkpoint=checkpoint, **settings))
    assert [result.epoch for result in resumed] == list(range(kill_epoch, 3))
    expected = load_checkpoint(os.path.join(full_dir, "models", "model_2.pt"))["model"]
    got = load_checkpoint(os.path.join(models, "model_2.pt"))["model"]
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_a_loader_timeout_ends_the_run_with_the_state_of_its_last_batch(corpus, tmp_path,
                                                                        monkeypatch):
    loader = {"batch_size": 4, "num_workers": 1, "pin_memory": False, "drop_last": True,
              "timeout": 2}
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=loader)
    full_dir, exp_dir = str(tmp_path / "full"), str(tmp_path / "exp")
    run_training(tiny_config(full_dir, corpus, **settings))
    samples = Dataset._samples

    def stuck_after_three_batches(self, *args):
        # in the (forked) worker: a read that never comes back, after three batches' samples
        for number, sample in enumerate(samples(self, *args)):
            if number == 3 * loader["batch_size"]:
                time.sleep(60)
            yield sample

    monkeypatch.setattr(Dataset, "_samples", stuck_after_three_batches)
    with pytest.raises(DataLoaderFailedError, match=(
            r"^the training data loader failed at epoch 1 after its batch 3: DataLoader timed "
            r"out after 2(\.0)? seconds \(no batch within dataloader_args\.timeout: .*\); the "
            r"state after batch 3 is saved in .*interrupted\.pt: run the same command to "
            r"continue")):
        run_training(tiny_config(exp_dir, corpus, **settings))
    monkeypatch.undo()
    models = os.path.join(exp_dir, "models")
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"]) == (1, 3)
    assert [result.epoch for result in run_training(tiny_config(exp_dir, corpus, **settings))
            ] == [1, 2]
    expected = load_checkpoint(os.path.join(full_dir, "models", "model_2.pt"))["model"]
    got = load_checkpoint(os.path.join(models, "model_2.pt"))["model"]
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
