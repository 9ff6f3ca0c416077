"""A non-finite loss in a whole run: the state saved before the run stops, and epochs that
``nonfinite_loss: skip`` leaves (nearly) untrained."""
import logging
import os

import pytest
import torch

from train_helpers import load_checkpoint, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.train.step import TrainingStep
from wespeaker_py.train.trainer import NonFiniteLossError

# epochs of 6 batches, a log point every 2; only the last epoch is kept
SETTINGS = dict(num_epochs=3, save_epoch_interval=5, num_avg=1, log_batch_interval=2,
                dataloader_args={"batch_size": 4, "num_workers": 0, "pin_memory": False,
                                 "drop_last": True})


def _poison(monkeypatch, poisoned):
    """Make the waveforms NaN for the steps where ``poisoned(self, batch, step_number)``."""
    original, calls = TrainingStep.__call__, []

    def step(self, batch):
        calls.append(batch)
        if poisoned(self, batch, len(calls)):
            batch = dict(batch, wavs=batch["wavs"] * float("nan"))
        return original(self, batch)

    monkeypatch.setattr(TrainingStep, "__call__", step)


def _once_the_margin_rises(self, batch, step_number):
    # one utterance that gives NaN from epoch 2 on: a rerun meets it again
    return "spk2-utt5" in batch["keys"] and float(self.model.projection.margin) > 0


def test_a_non_finite_loss_saves_the_state_that_a_skip_run_continues(corpus, tmp_path,
                                                                     monkeypatch):
    _poison(monkeypatch, _once_the_margin_rises)
    skipping_dir, stopped_dir = str(tmp_path / "skipping"), str(tmp_path / "stopped")
    skipping = run_training(tiny_config(skipping_dir, corpus, nonfinite_loss="skip",
                                        **SETTINGS))
    assert [result.skipped_batches for result in skipping] == [0, 1, 1]

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 2, batch \d.*"
                                                 r"saved in \S*models/interrupted\.pt: run the "
                                                 r"same command to continue from there, with "
                                                 r"nonfinite_loss: skip"):
        run_training(tiny_config(stopped_dir, corpus, **SETTINGS))
    models = os.path.join(stopped_dir, "models")
    assert os.listdir(models) == ["interrupted.pt"]   # epoch 1 is not one to keep
    saved = load_checkpoint(os.path.join(models, "interrupted.pt"))
    assert saved["interrupted_at"]["epoch"] == 2
    assert all(torch.isfinite(value).all() for value in saved["model"].values()
               if value.is_floating_point())

    # nonfinite_loss may change: the rerun continues where the stopped run was, and ends
    # exactly where a run that skipped from the start did
    resumed = run_training(tiny_config(stopped_dir, corpus, nonfinite_loss="skip", **SETTINGS))
    assert [result.epoch for result in resumed] == [2, 3]
    assert "(epoch 2 from its batch" in open(os.path.join(stopped_dir, "train.log")).read()
    expected = load_checkpoint(os.path.join(skipping_dir, "models", "model_3.pt"))["model"]
    got = load_checkpoint(os.path.join(models, "model_3.pt"))["model"]
    assert all(torch.equal(value, got[key]) for key, value in expected.items())
    assert resumed[-1].loss == pytest.approx(skipping[-1].loss, rel=1e-9)


def test_an_epoch_that_applied_no_step_stops_the_run(corpus, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda self, batch, step_number: step_number > 6)   # from epoch 2
    exp_dir = str(tmp_path / "exp")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 applied no training step: all 6 "
                                                 r"batches .* were dropped"):
        run_training(tiny_config(exp_dir, corpus, nonfinite_loss="skip",
                                 **dict(SETTINGS, save_epoch_interval=1)))
    assert sorted(os.listdir(os.path.join(exp_dir, "models"))) == ["model_1.pt"]
    log = open(os.path.join(exp_dir, "train.log")).read()
    assert "epoch 2 done: loss nan acc nan" in log
    assert "(6 batches over all ranks, 6 skipped)" in log


def test_an_epoch_that_dropped_most_steps_is_warned_about(corpus, tmp_path, monkeypatch,
                                                          caplog):
    # batches 1-4 of epoch 2 (of 6)
    _poison(monkeypatch, lambda self, batch, step_number: 7 <= step_number <= 10)
    with caplog.at_level(logging.WARNING):
        history = run_training(tiny_config(str(tmp_path / "exp"), corpus,
                                           nonfinite_loss="skip", **SETTINGS))
    assert [result.skipped_batches for result in history] == [0, 4, 0]
    warnings = [record.getMessage() for record in caplog.records
                if "of its" in record.getMessage()]
    assert warnings == [warnings[0]] and warnings[0].startswith(
        "epoch 2 dropped 4 of its 6 batches (over all ranks) for a non-finite loss")


def test_a_non_finite_loss_at_an_epochs_last_batch_resumes_at_its_end_reading_no_data(
        corpus, tmp_path, monkeypatch):
    from wespeaker_py.dataset import Dataset
    from wespeaker_py.train.curves import read_training_curves
    seen = []   # the steps of the run under way: the last batch of epoch 2 is poisoned
    _poison(monkeypatch, lambda self, batch, step_number: seen.append(None) or len(seen) == 12)
    read_epochs = []
    original_iter = Dataset.__iter__

    def iterate(self):
        read_epochs.append(self.epoch)
        return original_iter(self)

    monkeypatch.setattr(Dataset, "__iter__", iterate)
    settings = dict(SETTINGS, save_epoch_interval=1, num_avg=2)
    skipping_dir, stopped_dir = str(tmp_path / "skipping"), str(tmp_path / "stopped")
    skipping = run_training(tiny_config(skipping_dir, corpus, nonfinite_loss="skip",
                                        **settings))
    assert [result.skipped_batches for result in skipping] == [0, 1, 0]

    seen.clear()
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, batch 6;.* after batch 6"):
        run_training(tiny_config(stopped_dir, corpus, **settings))
    models = os.path.join(stopped_dir, "models")
    at = load_checkpoint(os.path.join(models, "interrupted.pt"))["interrupted_at"]
    assert (at["epoch"], at["batch"]) == (2, 6)

    read_epochs.clear()
    resumed = run_training(tiny_config(stopped_dir, corpus, nonfinite_loss="skip",
                                       checkpoint=os.path.join(models, "model_1.pt"),
                                       **settings))
    assert read_epochs == [3]   # epoch 2's batches are all trained: its data is not read again
    assert [result.epoch for result in resumed] == [2, 3]
    assert (resumed[0].batches, resumed[0].skipped_batches) == (6, 1)
    assert resumed[0].loss == pytest.approx(skipping[1].loss, rel=1e-9)
    for epoch in (2, 3):   # epoch 2's checkpoint is written as the uninterrupted run's
        expected = load_checkpoint(os.path.join(skipping_dir, "models", f"model_{epoch}.pt"))
        got = load_checkpoint(os.path.join(models, f"model_{epoch}.pt"))
        assert all(torch.equal(value, got["model"][key])
                   for key, value in expected["model"].items()), epoch
    log = open(os.path.join(stopped_dir, "train.log")).read()
    assert "training epochs 2 to 3 (epoch 2 from its end, after its last batch 6)" in log
    assert "from its batch 7" not in log
    # the curves keep the stopped run's log points of epoch 2 (batch 6's found the NaN and
    # logged no loss) and the resumed run's mean of it
    curves = read_training_curves(os.path.join(stopped_dir, "train.log"))
    assert [batch for epoch, batch in sorted(curves.batches) if epoch == 2] == [2, 4]
    assert curves.batches_per_epoch[2] == 6 and 2 in curves.epochs
