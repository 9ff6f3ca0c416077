"""A full disk in the middle of training: one line that says what was not written and how
to go on, a log file that stops quietly, and a lock that is let go of."""
import errno
import logging
import os

import pytest

from train_helpers import run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.errors import RunFailedError
from wespeaker_py.train.experiment import ExperimentFolder
from wespeaker_py.utils import locks
from wespeaker_py.utils.atomic_files import DiskFullError
from wespeaker_py.utils.logging_utils import log_to_file


def test_a_log_file_on_a_full_disk_warns_once_and_closes_quietly(caplog, capsys):
    stop = log_to_file("/dev/full")   # every write: ENOSPC
    log = logging.getLogger("wespeaker_py.test_disk")
    with caplog.at_level(logging.INFO):
        for number in range(3):
            log.info("line %d", number)
    stop()   # the flush of what was refused does not raise
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING]
    assert warnings == ["cannot write the log file /dev/full (No space left on device); the "
                        "work goes on, and the file misses the lines from here on"]
    assert "Logging error" not in capsys.readouterr().err


def test_a_log_appended_after_a_torn_last_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("2026-12-08 01:40:54,570 INFO first\n2026-12")   # a run stopped mid-line
    stop = log_to_file(str(path))
    logging.getLogger("wespeaker_py.test_disk").warning("resumed")
    stop()
    lines = path.read_text().splitlines()
    assert lines[:2] == ["2026-12-08 01:40:54,570 INFO first", "2026-12"]
    assert lines[2].endswith("resumed") and len(lines) == 3


def test_a_lock_whose_holder_cannot_be_written_still_holds(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.os, "pwrite", full)
    path = str(tmp_path / ".train.lock")
    handle = locks.hold_lock(path, "process 1 on host")
    assert handle is not None and locks.lock_holder(path) == ""
    locks.drop_lock(handle)   # closing flushes nothing that could fail again
    assert not os.path.exists(path)


def test_a_full_disk_at_a_checkpoint_says_where_to_go_on_from_and_lets_go_of_the_lock(
        corpus, tmp_path, monkeypatch):
    saved = ExperimentFolder.save_checkpoint

    def full_at_epoch_two(self, epoch, *args, **kwargs):
        if epoch == 2:
            path = os.path.join(self.layout.model_dir, "model_2.pt")
            raise DiskFullError(path, OSError(errno.ENOSPC, "No space left on device"))
        return saved(self, epoch, *args, **kwargs)

    monkeypatch.setattr(ExperimentFolder, "save_checkpoint", full_at_epoch_two)
    exp_dir = str(tmp_path / "exp")
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    with pytest.raises(DiskFullError) as stopped:
        run_training(tiny_config(exp_dir, corpus, num_epochs=2, dataloader_args=loader))
    models = os.path.join(exp_dir, "models")
    assert str(stopped.value) == (
        f"no space left on device while writing {models}/model_2.pt; free space there, then "
        f"run the same command with --checkpoint {models}/model_1.pt (the recipes pass the "
        f"newest checkpoint) to continue from there")
    assert sorted(os.listdir(models)) == ["model_1.pt"]   # the lock is gone with the run
    last = open(os.path.join(exp_dir, "train.log")).read().splitlines()[-1]
    assert last.endswith(f"training stopped: {stopped.value}")


def test_an_experiment_folder_removed_under_the_run_stops_it_without_making_it_again(
        corpus, tmp_path, monkeypatch):
    import shutil
    saved = ExperimentFolder.save_checkpoint

    def removed_before_epoch_two(self, epoch, *args, **kwargs):
        if epoch == 2:   # a clean-up script, while epoch 2 trained
            shutil.rmtree(self.layout.exp_dir)
        return saved(self, epoch, *args, **kwargs)

    monkeypatch.setattr(ExperimentFolder, "save_checkpoint", removed_before_epoch_two)
    exp_dir = str(tmp_path / "exp")
    loader = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "drop_last": True}
    with pytest.raises(RunFailedError, match=rf"^{exp_dir} was removed or replaced while this "
                                             r"run trained in it \(.*\.train\.lock, which it "
                                             r"holds, is gone\): the run stops"):
        run_training(tiny_config(exp_dir, corpus, num_epochs=2, dataloader_args=loader))
    assert not os.path.exists(os.path.join(exp_dir, "models", "model_2.pt"))


def test_a_disk_too_full_for_the_models_folder_is_one_line_naming_it(
        corpus, tmp_path, monkeypatch):
    makedirs = os.makedirs
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")

    def full_for_models(path, *args, **kwargs):
        if os.path.abspath(path) == models:   # a file still fits, a folder does not
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", full_for_models)
    with pytest.raises(DiskFullError) as stopped:
        run_training(tiny_config(exp_dir, corpus, num_epochs=1))
    assert str(stopped.value).startswith(f"no space left on device while writing {models}")
