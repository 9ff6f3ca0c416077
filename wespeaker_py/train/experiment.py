"""The experiment folder: the one writer of checkpoints, config.yaml, final_model.pt and logs.

``exp_dir/train_curves.png`` is drawn again from ``train.log`` after every epoch.

One run at a time trains in a folder: rank 0 holds ``models/.train.lock``
(:func:`~wespeaker_py.utils.locks.hold_lock`) from the start of the run to its end, and a
second run into the same ``exp_dir`` (a requeued job beside the old one, a stage started
twice) stops before it writes anything, naming the process that holds it.

``exp_dir/models`` holds ``model_<epoch>.pt`` checkpoints and ``final_model.pt``,
a link to the last epoch's checkpoint. The link is made before that checkpoint
is renamed into place, so the checkpoint never exists without it, whenever the
process dies; a resume with nothing left to train repairs it for folders
written by older versions. Only rank 0 writes; every rank contributes its RNG
state and parameter digest to a checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
from typing import IO, Any, Callable, Mapping, Optional

import torch.nn as nn

from wespeaker_py.config import ConfigError, save_config
from wespeaker_py.errors import RunFailedError
from wespeaker_py.train.checkpoint import (capture_rng_state, checkpoint_name,
                                           checkpoints_by_epoch, parameter_digest,
                                           save_training_checkpoint)
from wespeaker_py.train.distributed import DistContext, gather_objects
from wespeaker_py.train.interrupt import InterruptedAt, Lineage
from wespeaker_py.train.plan import Layout, TrainingPlan
from wespeaker_py.utils.atomic_files import (atomic_symlink, raise_if_disk_full,
                                             remove_stale_temp_files, require_writable)
from wespeaker_py.utils.locks import drop_lock, hold_lock, lock_holder
from wespeaker_py.utils.logging_utils import get_logger, log_to_file
from wespeaker_py.utils.paths import OutputNotWritableError

logger = get_logger(__name__)

FINAL_MODEL = "final_model.pt"
TRAIN_LOCK = ".train.lock"   # in models/; never a checkpoint's name


def link_final_model(model_dir: str, epoch: int) -> None:
    """Point ``model_dir/final_model.pt`` at ``model_<epoch>.pt`` (atomically)."""
    atomic_symlink(checkpoint_name(epoch), os.path.join(model_dir, FINAL_MODEL))


class ExperimentFolder:
    """This rank's view of ``exp_dir``: rank 0 writes, the others only contribute."""

    def __init__(self, layout: Layout, world: DistContext):
        self.layout = layout
        self.world = world
        self._stop_file_log: Optional[Callable[[], None]] = None
        self._lock: Optional[IO[str]] = None
        self._writer = None
        self._curves_failed = False
        self.standing = Lineage(0, None)   # the checkpoint the run's weights last stood on
        self.standing_path: Optional[str] = None   # its file (None: none, from scratch)

    def open(self, resuming: bool) -> None:
        """Create ``models/`` and lock it for this run, start ``train.log`` and tensorboard
        (rank 0 writes).

        Refuses a folder another run is training in (:class:`RunFailedError` on every rank,
        before this run writes anything there; the lock is held until :meth:`close`), and
        to overwrite checkpoints unless ``resuming``; removes the temporary files a killed
        run left behind (:func:`~wespeaker_py.utils.atomic_files.remove_stale_temp_files`).
        """
        model_dir = self.layout.model_dir
        # a read-only file system: one line naming it, not a traceback from makedirs
        require_writable(os.path.join(model_dir, TRAIN_LOCK))
        try:
            os.makedirs(model_dir, exist_ok=True)
        except OSError as error:   # a full disk has room for a file but not a folder
            raise_if_disk_full(error, model_dir)
            raise OutputNotWritableError(
                f"cannot make {model_dir}: {error.strerror or error}") from None
        refusal = self._take_lock() if self.world.is_main else None
        refusal = gather_objects(refusal, self.world)[0]   # every rank stops with rank 0
        if refusal is not None:
            raise RunFailedError(refusal)
        if self.world.is_main:
            self._stop_file_log = log_to_file(self.layout.log_path)
        if not resuming and checkpoints_by_epoch(model_dir):
            raise ConfigError(f"{model_dir} already holds checkpoints; pass --checkpoint to "
                              f"resume or choose another exp_dir")
        if not self.world.is_main:
            return
        for folder in (self.layout.exp_dir, model_dir):
            remove_stale_temp_files(folder)   # logs each, with its size
        self._writer = _summary_writer(self.layout.tensorboard_dir)

    def _take_lock(self) -> Optional[str]:
        """Hold ``models/.train.lock`` for this process, saying who holds it; None, or the
        refusal when another run holds it."""
        lock_path = os.path.join(self.layout.model_dir, TRAIN_LOCK)
        since = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        try:
            self._lock = hold_lock(lock_path, f"process {os.getpid()} on "
                                              f"{socket.gethostname()} (since {since})")
        except OutputNotWritableError as error:   # no locks on this file system
            logger.warning("%s; training goes on without it: a second run into %s would not "
                           "be refused", error, self.layout.exp_dir)
            return None
        if self._lock is not None:
            return None
        holder = lock_holder(lock_path) or "another process"
        return (f"{self.layout.exp_dir} is being trained by {holder}, which holds "
                f"{lock_path}; wait for that run to finish or stop it, then run this again")

    def close(self) -> None:
        """Flush and stop the tensorboard and file logs; let go of the folder's lock (even
        when stopping a log fails)."""
        try:
            self._use_tensorboard(lambda writer: writer.close())
            self._writer = None
            if self._stop_file_log is not None:
                stop_file_log, self._stop_file_log = self._stop_file_log, None
                stop_file_log()
        finally:
            if self._lock is not None:
                drop_lock(self._lock)
                self._lock = None

    def log_scalars(self, step: int, **values: float) -> None:
        """Add ``train/<name>`` scalars to the tensorboard log (when there is one)."""
        for name, value in values.items():
            self._use_tensorboard(lambda writer: writer.add_scalar(f"train/{name}", value, step))

    def _use_tensorboard(self, write: Callable[[Any], None]) -> None:
        """``write(writer)`` with the tensorboard writer, when there is one.

        A writer that fails (its thread died of a full disk, say; it then fails every
        later call) costs a warning, once, and the tensorboard log, never the run.
        """
        writer = self._writer
        if writer is None:
            return
        try:
            write(writer)
        except Exception as err:   # whatever the cause, a log must not end hours of training
            self._writer = None
            logger.warning("could not write the tensorboard log in %s (%s: %s); training "
                           "goes on without it", self.layout.tensorboard_dir,
                           type(err).__name__, err)
            with contextlib.suppress(Exception):   # let go of its file; it failed already
                writer.close()

    def draw_curves(self) -> None:
        """Draw ``train_curves.png`` from ``train.log`` (rank 0).

        A figure that cannot be drawn costs a warning (once), never the run.
        """
        if not self.world.is_main or self._curves_failed:
            return
        from wespeaker_py.train.curves import plot_training_curves, read_training_curves
        try:
            curves = read_training_curves(self.layout.log_path)
            plot_training_curves(curves, self.layout.curves_path,
                                 title=os.path.basename(os.path.abspath(self.layout.exp_dir)))
        except Exception as err:   # whatever the cause, a plot must not end hours of training
            self._curves_failed = True
            logger.warning("could not draw %s (%s: %s); training goes on without it",
                           self.layout.curves_path, type(err).__name__, err)

    def save_config(self, plan: TrainingPlan) -> None:
        """Write the resolved config (every key, ``feat_dim`` filled) as config.yaml; when the
        run continues a training checkpoint of other settings, log which changed from which
        epoch (train.log keeps what config.yaml no longer says)."""
        if not self.world.is_main:
            return
        if plan.start.continued is not None:
            plan.start.continued.log()
        save_config(plan.config, self.layout.config_path)

    def save_checkpoint(self, epoch: int, is_last: bool, settings: Mapping[str, Any],
                        spk2id_digest: str, model: nn.Module, optimizer, lr_scheduler,
                        margin_scheduler, grad_scaler) -> Optional[str]:
        """Write ``model_<epoch>.pt`` with every rank's RNG state; link the last one.

        ``settings`` and ``spk2id_digest``: the plan's ``run_settings`` and
        ``spk2id_digest``, which the checkpoint records for a run that continues it.

        Each rank's parameter digest is gathered too: ranks that drifted apart
        (a DDP desynchronisation) stop the run here rather than average into
        nonsense later. An ``interrupted.pt`` left behind is then out of date
        and removed.
        """
        states, digests = self._gather_states(model, f"after epoch {epoch}")
        path = self.layout.checkpoint_path(epoch)
        standing = Lineage(epoch, digests[0])
        if not self.world.is_main:
            self.standing, self.standing_path = standing, path
            return None
        self._check_folder_is_ours()
        model_dir = self.layout.model_dir
        link = (lambda: link_final_model(model_dir, epoch)) if is_last else None
        save_training_checkpoint(path, model, optimizer, lr_scheduler, margin_scheduler, epoch,
                                 [state["rng"] for state in states], digests, settings,
                                 spk2id_digest, grad_scaler, before_publish=link)
        # once written: a failed save leaves the run standing on the checkpoint before
        self.standing, self.standing_path = standing, path
        if os.path.exists(self.layout.interrupted_path):
            os.remove(self.layout.interrupted_path)
        logger.info("saved %s", path)
        return path

    def save_interrupted(self, epoch: int, batch: int, epoch_iter: int,
                         settings: Mapping[str, Any], spk2id_digest: str, totals,
                         epoch_start_rng, model: nn.Module, optimizer, lr_scheduler,
                         margin_scheduler, grad_scaler) -> Optional[str]:
        """Write ``models/interrupted.pt``: the state after ``batch`` of the ``epoch_iter``
        batches of ``epoch`` of a run of ``settings`` and ``spk2id_digest`` (its plan's
        ``run_settings`` and ``spk2id_digest``).

        ``epoch_start_rng``: this rank's generators as the epoch began (None at
        an epoch's start).
        """
        states, digests = self._gather_states(model, f"at epoch {epoch}, batch {batch}",
                                              totals=list(totals), epoch_start=epoch_start_rng)
        if not self.world.is_main:
            return None
        at = InterruptedAt(epoch, batch, [state["totals"] for state in states], self.standing,
                           None if epoch_start_rng is None
                           else [state["epoch_start"] for state in states], epoch_iter,
                           dict(settings))
        self._check_folder_is_ours()
        path = self.layout.interrupted_path
        save_training_checkpoint(path, model, optimizer, lr_scheduler, margin_scheduler,
                                 epoch - 1, [state["rng"] for state in states], digests,
                                 settings, spk2id_digest, grad_scaler,
                                 extra={"interrupted_at": at.to_dict()})
        logger.info("saved %s (epoch %d after batch %d)", path, epoch, batch)
        return path

    def _check_folder_is_ours(self) -> None:
        """Refuse to save into an experiment folder removed or replaced since this run took
        its lock (a clean-up script, a user freeing space): the write would make the
        folder again, without config.yaml, train.log or the earlier checkpoints."""
        if self._lock is None:
            return
        lock_path = os.path.join(self.layout.model_dir, TRAIN_LOCK)
        try:
            ours = os.path.samestat(os.fstat(self._lock.fileno()), os.stat(lock_path))
        except FileNotFoundError:
            ours = False
        if not ours:
            raise RunFailedError(
                f"{self.layout.exp_dir} was removed or replaced while this run trained in it "
                f"({lock_path}, which it holds, is gone): the run stops without saving there; "
                f"start it again, or from a checkpoint kept elsewhere")

    def _gather_states(self, model: nn.Module, when: str, **more):
        """Every rank's RNG state, parameter digest and ``more`` entries (one collective):
        (the states by rank, the digests by rank); rank 0 checks the digests agree."""
        states = gather_objects({"rng": capture_rng_state(self.world.device),
                                 "params": parameter_digest(model), **more}, self.world)
        digests = [state["params"] for state in states]
        if self.world.is_main and len(set(digests)) != 1:
            differing = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
            raise RuntimeError(f"{when} the parameters of ranks {differing} differ "
                               f"from rank 0's: the DDP replicas are out of sync")
        return states, digests

    def finish_without_training(self, num_epochs: int, start_epoch: int) -> None:
        """A resume past the last epoch: check the last checkpoint exists and link it."""
        if not self.world.is_main:
            return
        last = self.layout.checkpoint_path(num_epochs)
        if not os.path.isfile(last):
            raise ConfigError(f"nothing to train: the run would start at epoch {start_epoch} "
                              f"but num_epochs is {num_epochs}, and {last} does not exist")
        link_final_model(self.layout.model_dir, num_epochs)
        logger.info("nothing left to train: epoch %d is the last; %s points at %s",
                    num_epochs, FINAL_MODEL, os.path.basename(last))


def _summary_writer(log_dir: str):
    """A tensorboard SummaryWriter in ``log_dir``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir)
