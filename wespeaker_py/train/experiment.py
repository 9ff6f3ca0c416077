"""The experiment folder's rules: what a run may start from, what it writes, and its logs.

``exp_dir/models`` holds ``model_<epoch>.pt`` checkpoints and ``final_model.pt``,
a link to the last epoch's checkpoint. The link is made before that checkpoint
is renamed into place, so the checkpoint never exists without it, whenever the
process dies; a resume with nothing left to train repairs it for folders
written by older versions.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch.nn as nn

from wespeaker_py.config import ConfigError, TrainConfig
from wespeaker_py.runtime.checkpoint import (load_model_init, load_weights, model_state_of,
                                             read_checkpoint)
from wespeaker_py.train.checkpoint import epoch_from_name, is_training_checkpoint
from wespeaker_py.utils.file_utils import remove_stale_temp_files, temp_name_for
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

FINAL_MODEL = "final_model.pt"
_PACKAGE_LOGGER = "wespeaker_py"


@dataclass(frozen=True)
class ExperimentSettings:
    """What the bookkeeping reads from the config."""

    exp_dir: str
    num_epochs: int
    save_epoch_interval: int = 5
    num_avg: int = 10
    checkpoint: Optional[str] = None
    model_init: Optional[str] = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> "ExperimentSettings":
        """Read the folder, epoch and checkpoint keys (``num_epochs >= 1`` is the schema's)."""
        return cls(exp_dir=config.exp_dir, num_epochs=config.num_epochs,
                   save_epoch_interval=config.save_epoch_interval, num_avg=config.num_avg,
                   checkpoint=config.checkpoint or None, model_init=config.model_init or None)

    @property
    def model_dir(self) -> str:
        return os.path.join(self.exp_dir, "models")

    def checkpoint_path(self, epoch: int) -> str:
        return os.path.join(self.model_dir, f"model_{epoch}.pt")

    def should_save(self, epoch: int) -> bool:
        """Every ``save_epoch_interval`` epochs, each of the last ``num_avg``, and the last."""
        return (epoch % self.save_epoch_interval == 0 or epoch > self.num_epochs - self.num_avg
                or epoch == self.num_epochs)


def existing_checkpoints(model_dir: str) -> List[str]:
    """The ``model_<epoch>.pt`` names in ``model_dir``, sorted by name."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(name for name in os.listdir(model_dir) if epoch_from_name(name) is not None)


def prepare_model_dir(settings: ExperimentSettings, is_main: bool) -> None:
    """Create ``exp_dir/models``; refuse to overwrite checkpoints unless resuming.

    The main process also removes the temporary files that a killed run left
    behind (those whose writing process is gone).
    """
    model_dir = settings.model_dir
    if not settings.checkpoint and existing_checkpoints(model_dir):
        raise ConfigError(f"{model_dir} already holds checkpoints; pass --checkpoint to resume "
                          f"or choose another exp_dir")
    os.makedirs(model_dir, exist_ok=True)
    if is_main:
        removed = remove_stale_temp_files(settings.exp_dir) + remove_stale_temp_files(model_dir)
        if removed:
            logger.info("removed %d temporary files of an interrupted run", len(removed))


def link_final_model(model_dir: str, epoch: int) -> None:
    """Point ``model_dir/final_model.pt`` at ``model_<epoch>.pt`` (atomically)."""
    link = os.path.join(model_dir, FINAL_MODEL)
    tmp = temp_name_for(link)
    os.symlink(f"model_{epoch}.pt", tmp)
    os.replace(tmp, link)


def finish_without_training(settings: ExperimentSettings, start_epoch: int) -> None:
    """A resume past the last epoch: check the last checkpoint exists and link it."""
    last = settings.checkpoint_path(settings.num_epochs)
    if not os.path.isfile(last):
        raise ConfigError(f"nothing to train: the run would start at epoch {start_epoch} but "
                          f"num_epochs is {settings.num_epochs}, and {last} does not exist")
    link_final_model(settings.model_dir, settings.num_epochs)
    logger.info("nothing left to train: epoch %d is the last; %s points at %s",
                settings.num_epochs, FINAL_MODEL, os.path.basename(last))


def load_start_weights(settings: ExperimentSettings, model: nn.Module) -> Tuple[Any, int]:
    """Apply ``model_init`` and ``checkpoint`` weights; return (checkpoint, start_epoch).

    ``checkpoint`` is the training state to restore (None unless resuming). A
    checkpoint of a frozen SSL front-end run has no WavLM weights; the model
    keeps its pretrained ones (see :func:`load_weights`). That is how the next
    step of the WavLM recipe starts from the frozen step's ``avg_model.pt``.
    """
    if settings.model_init:
        logger.info("initialising the model from %s", settings.model_init)
        load_model_init(model, settings.model_init)
    path = settings.checkpoint
    if not path:
        return None, 1
    checkpoint = read_checkpoint(path)
    if is_training_checkpoint(checkpoint):
        load_weights(model, checkpoint["model"], path, allow_head_truncation=False)
        return checkpoint, int(checkpoint["epoch"]) + 1
    # A bare state_dict (avg_model.pt copied to model_0.pt for LM fine-tuning,
    # or a WeSpeaker checkpoint): weights only, training continues after the
    # epoch in its name.
    load_weights(model, model_state_of(checkpoint), path, allow_head_truncation=True)
    logger.info("loaded the weights of %s (no optimizer or scheduler state)", path)
    return None, (epoch_from_name(path) or 0) + 1


def log_to_file(path: str) -> Callable[[], None]:
    """Copy the package's INFO-and-above records into ``path``; return the undo function."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    if root.handlers and root.handlers[0].formatter is not None:
        handler.setFormatter(root.handlers[0].formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger(_PACKAGE_LOGGER)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)

    def undo() -> None:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()

    return undo


def summary_writer(exp_dir: str):
    """A tensorboard SummaryWriter under exp_dir/tensorboard, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(exp_dir, "tensorboard"))
