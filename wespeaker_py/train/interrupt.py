"""Stopping a run mid-epoch on request, and continuing it from the batch it stopped at.

A cluster that preempts a job, or ends it at its time limit, sends SIGTERM first
(torchrun passes it to each rank's process group and kills them after its shutdown
timeout: 30 s unless raised, as tools/recipe/train_stage.sh does); SIGUSR1 sent to
the training processes gives earlier notice (see docs/training.md), and Ctrl-C at a
terminal sends SIGINT (torchrun passes it on as it does SIGTERM), and a rank whose
torchrun ends without passing anything on (``kill -9``, the out-of-memory killer) gets
SIGTERM from the kernel (:func:`watch_launcher`). On any of them
training does not die where it stands: after every batch the ranks agree
(:class:`RunControl`, one small all-reduce on the host) whether any got one, and
then write ``models/interrupted.pt`` and exit with status 1. The same command
continues from that batch, exactly where an uninterrupted run would be.

The same file is written without stopping every ``save_minute_interval`` minutes
(at a log point, by rank 0's clock), so a run killed outright (out of memory, a
lost node) loses at most that much, and before a non-finite loss stops the run
(``nonfinite_loss: raise``), with the step that caused it undone; a model
checkpoint written later replaces it.

``interrupted.pt`` is a training checkpoint of the state after batch B of epoch E
(its ``epoch`` is E - 1, so it resumes into E) with ``interrupted_at`` added: E, B,
the epoch's sums so far, and the checkpoint its run last stood on (the one it
started from or the last it saved; its parameter digest). A run takes it only
when it starts from that same checkpoint (or, from scratch, with the same model,
head and seed), on as many ranks if it stopped mid-epoch, so a run rolled back to
an older checkpoint never jumps forward into the abandoned one, and only with the
same settings (:func:`training_settings`): a rerun from the same checkpoint with a
lower learning rate trains on from that checkpoint rather than continue the stopped
attempt. Deleting the file discards it.

Every training checkpoint records the settings of its run too, and a run that continues one
(``--checkpoint model_<N>.pt``, or interrupted.pt) is compared with them
(:func:`continued_settings`): another front-end or other speaker class ids is a warning
naming the keys, other changes (a later step's schedule, batch size, trained parameters) an
INFO line; both name the epoch they hold from, which config.yaml does not.
"""
from __future__ import annotations

import hashlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from wespeaker_py.config.schema import FRONTENDS
from wespeaker_py.errors import RunFailedError
from wespeaker_py.train.checkpoint import RUN_SETTINGS, SPK2ID_DIGEST, tensors_digest
from wespeaker_py.train.distributed import DistContext, all_reduce_sum
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.processes import die_with_parent, tie_worker_to
from wespeaker_py.utils.torch_files import read_checkpoint

logger = get_logger(__name__)

INTERRUPTED_NAME = "interrupted.pt"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# set by torch's elastic agent (torchrun) in the environment of each worker it starts
LAUNCHER_RUN_ID = "TORCHELASTIC_RUN_ID"
# config keys (``"block.key"`` for a key inside a block) that do not shape the weights:
# where they go, how often they are logged or kept, the start weights (compared as the
# lineage, by their digest), how the data loader delivers batches (not which ones), and
# whether a non-finite step stops the run or is dropped (dropped either way), and how many
# skipped utterances stop it after an epoch. Left out of training_settings: they may change
# at any point of a run.
RUN_ONLY_KEYS = frozenset({"exp_dir", "gpus", "num_avg", "save_epoch_interval",
                           "save_minute_interval", "log_batch_interval", "nonfinite_loss",
                           "max_fail_fraction", "checkpoint", "model_init",
                           "dataloader_args.pin_memory", "dataloader_args.prefetch_factor",
                           "dataloader_args.multiprocessing_context",
                           "dataloader_args.timeout"})
# settings that only cut epochs into batches: compared as the epoch length, which matters
# mid-epoch only (a run stopped at an epoch's end continues with epochs of any length)
EPOCH_LENGTH_KEYS = frozenset({"dataloader_args.batch_size",
                               "dataset_args.sample_num_per_epoch"})
# config keys of the front-end, what makes the model's input of the audio: a run that continues
# a training checkpoint with other ones trains weights made for other features. Inside the
# FRONTEND_BLOCKS the FRONTEND_RUN_ENTRIES are left out.
FRONTEND_KEYS = frozenset({"dataset_args.frontend", "dataset_args.resample_rate",
                           "dataset_args.cmvn"})
# (cmvn_args and the settings block of every front-end of FRONTENDS, chosen or not)
FRONTEND_BLOCKS = frozenset({"dataset_args.cmvn_args"}
                            | {f"dataset_args.{choice.block}" for choice in FRONTENDS.values()})
# front-end entries that a later step of a recipe changes: what trains (Whisper-PMFA's second
# step unfreezes the encoder), where pretrained weights are read from (the checkpoint holds
# them), and training-only settings (dither, SpecAugment inside TFMel, memory, learning rate)
FRONTEND_RUN_ENTRIES = frozenset({"frozen", "model_path", "path_or_url", "download_dir",
                                  "model_name", "gradient_checkpointing", "lr_scale",
                                  "frozen_bf16", "dither", "do_spec_aug", "freq_mask_width",
                                  "time_mask_width"})
# a repeat of the pending stop signal this soon after it is the same request delivered twice:
# at a time limit SLURM signals every process of the step, ranks included, and torchrun
# passes its own copy on to each rank's process group milliseconds later; a Ctrl-C reaches
# every process of the terminal's foreground group, which holds the ranks too where torchrun
# does not start them in a session of their own, and torchrun passes it on
REPEAT_GRACE_SECONDS = 5.0


class TrainingStopped(RunFailedError):
    """The run stopped on a signal after saving interrupted.pt (the command exits 1)."""


@dataclass(frozen=True)
class Lineage:
    """The checkpoint a run stands on: its epoch and a digest of its weights (see
    :func:`standing_of`)."""

    epoch: int
    digest: Optional[str]


@dataclass(frozen=True)
class InterruptedAt:
    """Where a stopped run stood: epoch, batches done in it, the epoch's sums, its lineage.

    ``totals``: each rank's sums of the epoch so far. ``epoch_start_rng``: each
    rank's generators as the epoch began, when the data loader drew its base seed
    from them; a resume draws it again from the same state. Both hold one entry
    per rank of the stopped run, so only a run of as many ranks may continue it
    mid-epoch (at an epoch's end they are zero and unset).
    ``epoch_iter``: the stopped run's batches per epoch on each rank (None in a
    file of older code); only a run with epochs as long continues mid-epoch.
    ``settings``: the stopped run's :func:`training_settings` (None in a file of
    older code); only a run of the same settings continues it.
    """

    epoch: int
    batch: int
    totals: List[List[float]]
    after: Lineage
    epoch_start_rng: Optional[List[Any]] = None
    epoch_iter: Optional[int] = None
    settings: Optional[Dict[str, Any]] = None

    @property
    def world_size(self) -> int:
        return len(self.totals)

    @property
    def after_last_batch(self) -> bool:
        """Whether the epoch stopped after its last batch (a non-finite loss found there):
        only its end is left, and a resume reads none of its data again."""
        return self.batch == self.epoch_iter

    def goes_on_at(self) -> str:
        """Where a resume goes on, for the logs: ``epoch E from its batch B+1``, or ``epoch
        E from its end, after its last batch B`` (:attr:`after_last_batch`)."""
        if self.after_last_batch:
            return f"epoch {self.epoch} from its end, after its last batch {self.batch}"
        return f"epoch {self.epoch} from its batch {self.batch + 1}"

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "totals": self.totals,
                "after_epoch": self.after.epoch, "after_digest": self.after.digest,
                "epoch_start_rng": self.epoch_start_rng, "epoch_iter": self.epoch_iter,
                "settings": self.settings}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "InterruptedAt":
        return cls(int(state["epoch"]), int(state["batch"]),
                   [[float(v) for v in rank] for rank in state["totals"]],
                   Lineage(int(state["after_epoch"]), state["after_digest"]),
                   state.get("epoch_start_rng"), state.get("epoch_iter"),
                   state.get("settings"))


class StopRequest:
    """SIGTERM / SIGUSR1 / SIGINT noted (not obeyed at once) while training runs; a context
    manager.

    A second signal of the same kind while the first is pending does what the signal did
    before (a second Ctrl-C raises KeyboardInterrupt; SIGTERM ends the process), unless it
    comes within :data:`REPEAT_GRACE_SECONDS` of the first (the same request reaching the
    rank twice, see there). SIGINT that the process ignores (a background job of a shell,
    or one started with SIGINT ignored) stays ignored: whoever started it chose so.
    """

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None
        # the torchrun that started this rank, once watched (see watch_launcher)
        self.launcher: Optional[int] = None
        self._noted_at = 0.0
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        taken = [sig for sig in STOP_SIGNALS
                 if sig != signal.SIGINT or signal.getsignal(sig) != signal.SIG_IGN]
        try:
            self._previous = {sig: signal.signal(sig, self._note) for sig in taken}
        except ValueError:   # not the main thread: signals cannot be caught here
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def catches(self, signum: int) -> bool:
        """Whether ``signum`` is noted here (not obeyed) while the context is open."""
        return signum in self._previous

    def _note(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signal_number == signum:
            if now - self._noted_at < REPEAT_GRACE_SECONDS:
                return
            previous = self._previous.get(signum)
            if callable(previous):   # a Python handler (SIGINT's raises KeyboardInterrupt)
                signal.signal(signum, previous)
                previous(signum, frame)
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal_number = signum
        self._noted_at = now
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and self.launcher is not None:
            # the kernel's signal comes while the launcher exits: its pid may still be the
            # parent's, so the two senders cannot be told apart here
            name += f" (from torchrun, pid {self.launcher}, or as it ended)"
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send it again"
        logger.warning("got %s: training stops after the current batch, after saving where "
                       "it is (%s after %g s to stop at once)", name, again,
                       REPEAT_GRACE_SECONDS)


@dataclass(frozen=True)
class Agreement:
    """What every rank agreed on after a batch."""

    stop: bool   # some rank got a stop signal: save the state and stop
    save: bool   # save the state and go on (rank 0's clock says a periodic save is due)


def launcher_pid() -> Optional[int]:
    """The pid of the torchrun that started this process: its parent, when the environment
    holds the :data:`LAUNCHER_RUN_ID` torch's elastic agent gives the workers it starts and
    the parent's own environment does not (a process that inherited the variable from a
    rank, such as a training a rank's script starts, has no launcher to watch); else None,
    also where the parent's environment cannot be read (not Linux). Ask early (before the
    rank joins its job), so that a launcher that ends before :func:`watch_launcher` is
    noticed there."""
    if LAUNCHER_RUN_ID not in os.environ:
        return None
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/environ", "rb") as handle:
            names = {item.partition(b"=")[0] for item in handle.read().split(b"\0")}
    except OSError:
        return None
    return None if LAUNCHER_RUN_ID.encode() in names else parent


def watch_launcher(launcher: Optional[int], stop: StopRequest) -> None:
    """Have the kernel send this rank SIGTERM when its torchrun, ``launcher`` (see
    :func:`launcher_pid`; None: nothing to watch), ends, so that ``stop`` turns it into a
    stop request: without it a torchrun killed outright (``kill -9``, the out-of-memory
    killer) leaves its ranks training on, in sessions of their own that no terminal signal
    reaches.

    Asked only while ``stop`` catches SIGTERM, which would otherwise end the rank where it
    stands; the request outlasts ``stop``: a launcher that ends after training ends the
    rank (SIGTERM's default action).
    The kernel signals when the thread that started the rank ends: torchrun starts its
    workers, on restarts too, from the agent's main thread, which lives as long as it.

    Raises RunFailedError when the launcher has already ended.
    """
    if launcher is None or not stop.catches(signal.SIGTERM):
        return
    if os.getppid() != launcher:
        raise RunFailedError(f"torchrun (pid {launcher}), which started this rank, has "
                             f"ended before training began; run the command again")
    stop.launcher = launcher
    die_with_parent(launcher, signal.SIGTERM)
    logger.info("this rank watches torchrun (pid %d): SIGTERM when it ends", launcher)


class RunControl:
    """After every batch, the ranks agree on stopping and on a periodic save.

    Stop: some rank's :class:`StopRequest` got a signal. Save: at a log point, once
    ``save_minutes`` (0: never) have passed on rank 0's clock since the run started or
    its state was last saved (:meth:`saved`). Under torchrun that is one all-reduce of
    two numbers on the host (gloo) group per batch, which waits for no device work.
    """

    def __init__(self, stop: StopRequest, world: DistContext, save_minutes: float):
        self.stop = stop
        self.world = world
        self.save_seconds = 60.0 * save_minutes
        self._saved_at = time.monotonic()

    def agree(self, log_point: bool) -> Agreement:
        """The agreement after this batch (a collective: every rank calls it after the same
        batch); ``log_point``: the batch ends at a log point, where a periodic save may fall."""
        stop = self.stop.signal_number is not None
        save = (log_point and self.world.is_main and self.save_seconds > 0
                and time.monotonic() - self._saved_at >= self.save_seconds)
        if not self.world.is_distributed:
            return Agreement(stop, save)
        flags = torch.tensor([float(stop), float(save)])
        stops, saves = all_reduce_sum(flags, self.world, host=True).tolist()
        return Agreement(stops > 0, saves > 0)

    def saved(self) -> None:
        """The run's state was just saved: the next periodic save is due in
        ``save_minutes``."""
        self._saved_at = time.monotonic()


class WorkerIgnoringStops:
    """A DataLoader ``worker_init_fn``: the worker ignores the :data:`STOP_SIGNALS`, then runs
    ``then``.

    torchrun signals each rank's whole process group, workers included, a Ctrl-C
    reaches them too, and torch's worker loop ends a worker on SIGTERM or SIGINT; the
    training process decides
    when to stop, and its workers end with its iterator, or with the process itself
    when it is killed (:func:`~wespeaker_py.utils.processes.tie_worker_to`).
    """

    def __init__(self, then: Callable[[int], None]):
        self.then = then
        self.parent_pid = os.getpid()

    def __call__(self, worker_id: int) -> None:
        tie_worker_to(self.parent_pid)   # SIGTERM is ignored below
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        # the training loop starts its workers with these blocked (train.loop._start_workers),
        # so that one still starting up is not ended by them; ignored now, they can come
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.then(worker_id)


def standing_of(training_state: Optional[Mapping[str, Any]],
                weights: Optional[Mapping[str, torch.Tensor]], epoch: int,
                initialisation: str) -> Lineage:
    """The lineage of a run starting after ``epoch``: a training checkpoint's parameter
    digest, else a digest of the start ``weights`` (a bare state_dict, ``model_init``),
    else one of ``initialisation`` (what draws random initial weights: model, its
    arguments, head and seed)."""
    digests = (training_state or {}).get("param_digests")
    if digests:
        return Lineage(epoch, digests[0])
    if weights is not None:
        return Lineage(epoch, state_digest(weights))
    return Lineage(epoch, "scratch:" + hashlib.sha256(initialisation.encode()).hexdigest())


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and bytes, in name order."""
    return tensors_digest(sorted(state.items()))


def training_settings(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A run's config (as :func:`~wespeaker_py.config.config_to_dict` gives it) flattened to
    ``"block.key"`` names, without the :data:`RUN_ONLY_KEYS`: what a stopped run and the
    run continuing it must share."""
    flat: Dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if prefix in RUN_ONLY_KEYS:
            return
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    add("", config)
    return flat


def settings_changes(before: Mapping[str, Any], now: Mapping[str, Any],
                     ignored: frozenset = frozenset()) -> List[str]:
    """``"key: before -> now"`` for each setting not ``ignored`` that differs (a missing one
    is ``unset``)."""
    unset = object()
    changes = []
    for key in sorted((set(before) | set(now)) - ignored):
        old, new = before.get(key, unset), now.get(key, unset)
        if old != new:
            changes.append(f"{key}: {'unset' if old is unset else repr(old)} -> "
                           f"{'unset' if new is unset else repr(new)}")
    return changes


def is_frontend_key(key: str) -> bool:
    """True for a flattened config key of the front-end (:data:`FRONTEND_KEYS`, or inside one of
    the :data:`FRONTEND_BLOCKS` but not one of its :data:`FRONTEND_RUN_ENTRIES`)."""
    if key in FRONTEND_KEYS:
        return True
    in_block = any(key == block or key.startswith(block + ".") for block in FRONTEND_BLOCKS)
    return in_block and key.rsplit(".", 1)[-1] not in FRONTEND_RUN_ENTRIES


@dataclass(frozen=True)
class ContinuedSettings:
    """How a run's settings differ from those of the run that wrote the training checkpoint it
    continues, as ``"key: before -> now"`` entries (see :func:`continued_settings`).

    ``inputs``: the front-end's keys and the speakers' class ids, which a continuing run
    should share; ``others``: the rest (a later step's schedule, batch size, what trains).
    ``recorded`` is False for a checkpoint of older code, which records no settings.
    """

    source: str
    first_epoch: int   # the first epoch trained with this run's settings
    recorded: bool = True
    inputs: Tuple[str, ...] = ()
    others: Tuple[str, ...] = ()

    def log(self) -> None:
        """Say what changed from which epoch: a warning for the ``inputs``, an INFO line for the
        ``others`` (the run's config.yaml records this run's settings only)."""
        if not self.recorded:
            logger.info("%s records no run settings (older code): this run's settings are not "
                        "compared with those it was trained with", self.source)
            return
        if self.inputs:
            logger.warning("%s was trained with another front-end or other speakers than this "
                           "run continues it with from epoch %d (%s): its weights learned other "
                           "features or classes. Training goes on (no setting turns this into "
                           "an error); config.yaml records this run's settings, which hold from "
                           "epoch %d on only", self.source, self.first_epoch,
                           "; ".join(self.inputs), self.first_epoch)
        if self.others:
            logger.info("%s: settings changed from epoch %d on (config.yaml records this run's): "
                        "%s", self.source, self.first_epoch, "; ".join(self.others))


def continued_settings(checkpoint: Mapping[str, Any], source: str, first_epoch: int,
                       settings: Mapping[str, Any], spk2id_digest: str) -> ContinuedSettings:
    """How ``settings`` (a :func:`training_settings`) and ``spk2id_digest`` (a
    :func:`~wespeaker_py.train.checkpoint.speaker_map_digest`) of a run that continues the
    training ``checkpoint`` read from ``source`` at ``first_epoch`` differ from those the
    checkpoint records (:data:`RUN_ONLY_KEYS` left out)."""
    recorded = checkpoint.get(RUN_SETTINGS)
    if recorded is None:
        return ContinuedSettings(source, first_epoch, recorded=False)
    keys = frozenset(recorded) | frozenset(settings)
    frontend = frozenset(key for key in keys if is_frontend_key(key))
    inputs = settings_changes(recorded, settings, ignored=keys - frontend)
    saved_digest = checkpoint.get(SPK2ID_DIGEST)
    if saved_digest is not None and saved_digest != spk2id_digest:
        inputs.append(f"spk2id: train_label gives the speakers other class ids (mapping digest "
                      f"{saved_digest[:12]} -> {spk2id_digest[:12]})")
    others = settings_changes(recorded, settings, ignored=frontend | RUN_ONLY_KEYS)
    return ContinuedSettings(source, first_epoch, inputs=tuple(inputs), others=tuple(others))


def find_interrupted(path: str, standing: Lineage, world_size: int, epoch_iter: int,
                     settings: Optional[Mapping[str, Any]] = None
                     ) -> Optional[Mapping[str, Any]]:
    """The ``interrupted.pt`` at ``path`` when it continues ``standing`` on ``world_size``
    ranks of ``epoch_iter`` batches per epoch with the same ``settings`` (see
    :func:`training_settings`; None: not compared), else None (logged, naming the epoch
    this run starts at instead: the one after ``standing``).

    Stopped mid-epoch, a run of another number of ranks or another epoch length
    (another batch size or sample count) cannot take up the per-rank sums and the
    batch count. Stopped at an epoch's end (batch 0), it continues like any
    checkpoint of that epoch, on any number of ranks.

    Raises what reading a checkpoint raises for a damaged file.
    """
    if not os.path.isfile(path):
        return None
    loaded = read_checkpoint(path)
    at = InterruptedAt.from_dict(loaded["interrupted_at"])
    stopped = (f"{path} (stopped in epoch {at.epoch} after its batch {at.batch})" if at.batch
               else f"{path} (stopped at the end of epoch {at.epoch - 1})")
    instead = (f"this run starts at epoch {standing.epoch + 1}, after the checkpoint it "
               f"starts from")
    if at.after != standing:
        logger.info("%s continues the checkpoint of epoch %d, not the start of this run "
                    "(epoch %d): not used", stopped, at.after.epoch, standing.epoch)
        return None
    if at.batch and at.world_size != world_size:
        logger.warning("%s was written by %d ranks, this run has %d: not continued (continuing "
                       "mid-epoch needs as many ranks); %s", stopped, at.world_size,
                       world_size, instead)
        return None
    if at.batch and at.epoch_iter not in (None, epoch_iter):
        logger.warning("%s had %d batches per epoch, this run has %d (another dataloader_args."
                       "batch_size or dataset_args.sample_num_per_epoch): not continued "
                       "(continuing mid-epoch needs epochs as long); %s", stopped,
                       at.epoch_iter, epoch_iter, instead)
        return None
    # RUN_ONLY_KEYS ignored on both sides: a file of older code recorded some of them
    changes = ([] if settings is None or at.settings is None
               else settings_changes(at.settings, settings,
                                     ignored=EPOCH_LENGTH_KEYS | RUN_ONLY_KEYS))
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more"
                                          if len(changes) > 6 else "")
        logger.warning("%s was written by a run of other settings (%s): not continued; %s "
                       "(delete the file to silence this)", stopped, shown, instead)
        return None
    logger.info("continuing from %s: %s", stopped, at.goes_on_at())
    return loaded
