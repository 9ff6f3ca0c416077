"""The ranks' agreement after every batch (stop on a signal, periodic save), and the periodic
save of interrupted.pt that a run killed outright continues from."""
import os
import signal

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import free_port, load_checkpoint, plan_of, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import ConfigError, TrainConfig
from wespeaker_py.train import interrupt
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.interrupt import RunControl, StopRequest
from wespeaker_py.train.loop import EpochStopped, train_epoch
from wespeaker_py.train.step import TrainingStep
from wespeaker_py.train.trainer import Trainer

LOADER = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}


def _join_gloo(rank: int, port: int) -> DistContext:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    return DistContext(rank, rank, 2, torch.device("cpu"))


class _Clock:
    """A stand-in for the time module whose monotonic clock the test sets."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


def _agree_rank(rank: int, port: int, results) -> None:
    world = _join_gloo(rank, port)
    try:
        clock = _Clock()
        interrupt.time = clock   # this process's own module
        stop = StopRequest()
        control = RunControl(stop, world, save_minutes=1.0)
        seen = [control.agree(log_point=True)]            # nothing asked
        if rank == 1:
            clock.now = 120.0                               # only rank 0's clock counts
        seen.append(control.agree(log_point=True))
        if rank == 0:
            clock.now = 60.0                                # a save is due on rank 0
        seen.append(control.agree(log_point=False))        # ... at a log point only
        seen.append(control.agree(log_point=True))
        control.saved()
        seen.append(control.agree(log_point=True))         # the next is a minute away
        if rank == 1:
            stop.signal_number = signal.SIGUSR1             # rank 0 heard nothing
        seen.append(control.agree(log_point=False))
        results[rank] = [(agreed.stop, agreed.save) for agreed in seen]
    finally:
        dist.destroy_process_group()


def test_the_ranks_agree_after_any_batch_on_a_stop_and_on_rank_0s_save_clock():
    results = mp.Manager().dict()
    mp.spawn(_agree_rank, args=(free_port(), results), nprocs=2, join=True)
    expected = [(False, False), (False, False), (False, False), (False, True),
                (False, False), (True, False)]
    assert results[0] == expected and results[1] == expected


def _synthetic_batches(count: int):
    generator = torch.Generator().manual_seed(0)
    return [{"wavs": torch.randn(4, 16000, generator=generator) * 1000,
             "labels": torch.tensor([0, 1, 2, 3]),
             "keys": [f"utt{index}-{row}" for row in range(4)]} for index in range(count)]


def _stop_rank(rank: int, port: int, config, results) -> None:
    world = _join_gloo(rank, port)
    try:
        torch.manual_seed(0)
        trainer = Trainer(plan_of(config, world=world, epoch_iter=6))
        original, calls = TrainingStep.__call__, []

        def step(self, batch):
            calls.append(batch)
            if rank == 1 and len(calls) == 2:
                os.kill(os.getpid(), signal.SIGUSR1)   # rank 1 alone, during batch 2
            return original(self, batch)

        TrainingStep.__call__ = step
        with StopRequest() as stop:
            try:
                train_epoch(trainer, 1, _synthetic_batches(6), None,
                            RunControl(stop, world, save_minutes=0))
                results[rank] = "trained the whole epoch"
            except EpochStopped as stopped:
                results[rank] = (stopped.position.batch, len(calls))
    finally:
        dist.destroy_process_group()


def test_two_ranks_stop_after_the_batch_a_signal_came_in_not_at_the_next_log_point(
        corpus, tmp_path):
    # a slow model's 100 batches to the next log point outlast torchrun's grace period
    config = tiny_config(str(tmp_path / "exp"), corpus, log_batch_interval=100)
    results = mp.Manager().dict()
    mp.spawn(_stop_rank, args=(free_port(), config, results), nprocs=2, join=True)
    assert results[0] == (2, 2) and results[1] == (2, 2)


@pytest.mark.parametrize("value", [-1, "soon"])
def test_save_minute_interval_must_be_a_number_of_minutes(corpus, tmp_path, value):
    with pytest.raises(ConfigError, match=r"config key 'save_minute_interval' must be"):
        TrainConfig.from_dict(tiny_config(str(tmp_path), corpus, save_minute_interval=value))


class _HourPerCall:
    """A stand-in for the time module: each reading is an hour after the last."""

    def __init__(self):
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        return 3600.0 * self.calls


def test_a_run_killed_outright_continues_from_its_last_periodic_save(corpus, tmp_path,
                                                                     monkeypatch):
    # epochs of 6 batches, a log point every 2; epoch 2 and 3 are kept, epoch 1 is not
    settings = dict(num_epochs=3, save_epoch_interval=2, num_avg=1, log_batch_interval=2,
                    dataloader_args=LOADER)
    full_dir, killed_dir = str(tmp_path / "full"), str(tmp_path / "killed")
    run_training(tiny_config(full_dir, corpus, save_minute_interval=0, **settings))

    # every log point is 30 minutes after the last save; the process dies (no handler
    # runs: an out-of-memory kill, a lost node) during batch 5 of epoch 2
    monkeypatch.setattr(interrupt, "time", _HourPerCall())
    original, calls = TrainingStep.__call__, []

    def step_then_die(self, batch):
        calls.append(batch)
        if len(calls) == 6 + 5:
            raise SystemExit("killed")
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step_then_die)
    with pytest.raises(SystemExit, match="killed"):
        run_training(tiny_config(killed_dir, corpus, save_minute_interval=30, **settings))
    monkeypatch.undo()
    models = os.path.join(killed_dir, "models")
    assert sorted(os.listdir(models)) == ["interrupted.pt"]
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"], at["after_epoch"]) == (2, 4, 0)
    log = open(os.path.join(killed_dir, "train.log")).read()
    for epoch, batch in ((1, 2), (1, 4), (2, 0), (2, 2), (2, 4)):   # (2, 0): epoch 1's end
        assert f"interrupted.pt (epoch {epoch} after batch {batch})" in log

    # the same command continues at batch 5 of epoch 2, exactly as the run would have gone
    resumed = run_training(tiny_config(killed_dir, corpus, **settings))
    assert [result.epoch for result in resumed] == [2, 3]
    assert "training epochs 2 to 3 (epoch 2 from its batch 5)" in open(
        os.path.join(killed_dir, "train.log")).read()
    expected = load_checkpoint(os.path.join(full_dir, "models", "model_3.pt"))["model"]
    got = load_checkpoint(os.path.join(models, "model_3.pt"))["model"]
    assert expected.keys() == got.keys()
    assert all(torch.equal(value, got[key]) for key, value in expected.items())
    # model_2.pt superseded the periodic save, as it does a stop's
    assert sorted(os.listdir(models)) == ["final_model.pt", "model_2.pt", "model_3.pt"]


def test_a_periodic_save_that_finds_the_disk_full_warns_and_training_goes_on(
        corpus, tmp_path, monkeypatch, caplog):
    import errno

    from wespeaker_py.train.experiment import ExperimentFolder
    from wespeaker_py.utils.atomic_files import DiskFullError
    settings = dict(num_epochs=2, log_batch_interval=2, dataloader_args=LOADER)
    monkeypatch.setattr(interrupt, "time", _HourPerCall())   # every log point: a save is due

    def full(self, *args, **kwargs):
        raise DiskFullError(self.layout.interrupted_path,
                            OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(ExperimentFolder, "save_interrupted", full)
    exp_dir = str(tmp_path / "exp")
    with caplog.at_level("WARNING"):
        results = run_training(tiny_config(exp_dir, corpus, save_minute_interval=30,
                                           **settings))
    assert [result.epoch for result in results] == [1, 2]
    warnings = [record.getMessage() for record in caplog.records
                if "periodic save" in record.getMessage()]
    assert warnings and warnings[0] == (
        f"no space left on device while writing {exp_dir}/models/interrupted.pt; training "
        f"goes on without this periodic save (the state saved before it stays whole)")
    assert sorted(os.listdir(os.path.join(exp_dir, "models"))) == [
        "final_model.pt", "model_1.pt", "model_2.pt"]
