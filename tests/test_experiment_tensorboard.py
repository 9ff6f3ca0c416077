"""ExperimentFolder's tensorboard log: a writer that fails costs a warning, never the run."""
import errno
import logging

import pytest
import torch

from wespeaker_py.train import experiment
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.train.experiment import ExperimentFolder
from wespeaker_py.train.plan import Layout


class _DiskFullWriter:
    """A SummaryWriter whose thread died of a full disk after ``good`` records: from then
    on every call raises the thread's error again, as tensorboard's does."""

    def __init__(self, good: int):
        self.good = good
        self.scalars = []
        self.closed = 0

    def _fail_once_full(self) -> None:
        if len(self.scalars) >= self.good:
            raise OSError(errno.ENOSPC, "No space left on device")

    def add_scalar(self, tag, value, step):
        self._fail_once_full()
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed += 1
        self._fail_once_full()


# caplog is set on the module's own logger: ExperimentFolder.close() puts the package
# logger's level back as train.log found it, which caplog on that logger would then undo
@pytest.fixture
def folder(tmp_path, monkeypatch):
    writer = _DiskFullWriter(good=2)
    monkeypatch.setattr(experiment, "_summary_writer", lambda log_dir: writer)
    opened = ExperimentFolder(Layout(str(tmp_path / "exp")),
                              DistContext(0, 0, 1, torch.device("cpu")))
    opened.open(resuming=False)
    yield opened, writer
    opened.close()


def test_a_failing_tensorboard_writer_is_dropped_with_one_warning(folder, caplog):
    opened, writer = folder
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.train.experiment"):
        for step in range(1, 5):
            opened.log_scalars(step, loss=1.0 / step, accuracy=50.0)
        opened.close()
    assert writer.scalars == [("train/loss", 1.0, 1), ("train/accuracy", 50.0, 1)]
    warnings = [record.getMessage() for record in caplog.records
                if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert opened.layout.tensorboard_dir in warnings[0]
    assert "OSError" in warnings[0] and "No space left on device" in warnings[0]
    assert writer.closed == 1   # let go of once, when dropped


def test_a_tensorboard_writer_that_fails_to_close_costs_a_warning(folder, caplog):
    opened, writer = folder
    writer.good = 0
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.train.experiment"):
        opened.close()
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "could not write the tensorboard log" in caplog.records[0].getMessage()
