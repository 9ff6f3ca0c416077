"""One epoch: exactly ``epoch_iter`` steps, the schedules, and logging every few batches.

The loop never waits for the device between log points: step results are added
up on the device and read (one transfer) every ``log_batch_interval`` batches
and at the end of the epoch. That is also when non-finite steps are reported:
with ``nonfinite_loss: raise`` the run stops there, naming the first such
batch's utterance keys (the step itself was already undone on the device).
After every batch the ranks agree (:class:`~wespeaker_py.train.interrupt.RunControl`,
on the host) whether to stop there, on a signal, or to save the state at a log point.

A data loader that fails (a worker killed, by the out-of-memory killer say, or no batch
within ``dataloader_args.timeout``) is found where the next batch is asked for, never
mid-step: torch's check of its workers on SIGCHLD, which raises wherever the process is,
is held back until then (:class:`_WorkerDeathsAtNext`). The batches trained so far are
intact, so in one process the trainer saves the state there
(:class:`DataLoaderFailedError`); under torchrun the other ranks already wait for this
one's next step, so the rank only stops, with the same message.

Every rank runs exactly ``epoch_iter`` batches; the training data set repeats
its list when a rank's share runs short, as WeSpeaker's does, so no rank needs
to ask the others whether data remains. A loader that still ends early has no
usable utterance left, which is an error.
"""
from __future__ import annotations

import math
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import torch
from torch.utils.data._utils import signal_handling

from wespeaker_py.errors import RunFailedError, first_line
from wespeaker_py.train.checkpoint import capture_rng_state, restore_rng_state
from wespeaker_py.train.distributed import all_reduce_sum
from wespeaker_py.train.interrupt import STOP_SIGNALS
from wespeaker_py.train.step import StepOutcome
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.progress import progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

    from wespeaker_py.train.interrupt import InterruptedAt, RunControl
    from wespeaker_py.train.trainer import Trainer

logger = get_logger(__name__)


class TrainingDataError(RunFailedError):
    """The training data gave fewer batches than an epoch needs, or an epoch skipped more
    of it than ``max_fail_fraction`` (the command exits 1)."""


class Totals(NamedTuple):
    """Step outcomes added up: the loss, correct predictions and samples of the applied
    steps, and how many steps were applied and dropped.

    Floats as the host reads them, 0-d tensors as a step adds them; on the device, in
    :class:`EpochPosition` and in interrupted.pt a float64 vector in this order
    (:func:`zero_totals`).
    """

    loss_sum: Any
    correct: Any
    samples: Any
    applied: Any
    dropped: Any


def zero_totals(device: Optional[torch.device] = None) -> torch.Tensor:
    """A float64 vector of :class:`Totals`, all zero, on ``device`` (by default the CPU)."""
    return torch.zeros(len(Totals._fields), dtype=torch.float64, device=device)


@dataclass(frozen=True)
class EpochPosition:
    """Where this rank stands in an epoch: ``batch`` batches done, ``totals`` the epoch's
    sums so far (a vector of :class:`Totals`), ``epoch_start_rng`` its generators as the
    epoch began (None at an epoch's start): what interrupted.pt records."""

    batch: int
    totals: torch.Tensor
    epoch_start_rng: Optional[Mapping[str, Any]]


class EpochStopped(RunFailedError):
    """The ranks agreed to stop at ``position``. The trainer catches it, saves the state
    and raises :class:`~wespeaker_py.train.interrupt.TrainingStopped`."""

    def __init__(self, position: EpochPosition):
        super().__init__(f"stopped after batch {position.batch}")
        self.position = position


class NonFiniteLossError(RunFailedError):
    """The loss or the gradients became NaN or infinite (such a step changes nothing).

    ``position``: where the epoch stood at the log point that found it, with that
    step undone; the trainer saves the state there before the run ends.
    """

    def __init__(self, message: str, position: Optional[EpochPosition] = None):
        super().__init__(message)
        self.position = position


class DataLoaderFailedError(RunFailedError):
    """The training data loader failed: a worker died (killed by a signal: the kernel's
    out-of-memory killer often picks a worker) or no batch came within
    ``dataloader_args.timeout``.

    ``position``: where the epoch stood after its last trained batch, the failed one
    never trained; the trainer saves the state there. None under torchrun, where the
    other ranks wait in this one's next step and cannot save with it: nothing is saved.
    """

    def __init__(self, message: str, position: Optional[EpochPosition] = None):
        super().__init__(message)
        self.position = position


# the start of torch's messages for a worker that died and for dataloader_args.timeout (an
# error raised inside a worker reads "Caught <type> in DataLoader worker process N" instead)
_LOADER_FAILURES = ("DataLoader worker (pid", "DataLoader timed out")
# how long a connection error met fetching a batch may wait for torch to see a worker dead
_DEATH_WAIT_SECONDS = 2.0


class _WorkerDeathsAtNext:
    """Hold back torch's check of the loader workers on SIGCHLD, which raises wherever
    the main thread is (mid-step, where the weights may be half updated), until
    :meth:`check`, just before the next batch is asked for.

    torch installs that handler once per process, when the first iterator with workers
    starts them, so :meth:`watch` looks for it after every batch fetched until it takes
    it over (a SIGCHLD before then meets torch's own handler inside ``next``, which is
    where it belongs anyway). Only in the main thread, the one signals run in;
    :meth:`stop` puts torch's handler back.
    """

    def __init__(self) -> None:
        self._torch_handler: Optional[Any] = None
        self._pending = False
        self._watching = threading.current_thread() is threading.main_thread()

    def watch(self) -> None:
        """Take torch's SIGCHLD handler over once it is there (a cheap look until then)."""
        if not self._watching:
            return
        handler = signal.getsignal(signal.SIGCHLD)
        if callable(handler):
            signal.signal(signal.SIGCHLD, self._note)
            self._torch_handler = handler
            self._watching = False

    def _note(self, signum: int, frame) -> None:
        self._pending = True

    def check(self) -> None:
        """Run torch's check now if a child process ended since the last one (it raises
        for a worker that died)."""
        if self._pending and self._torch_handler is not None:
            self._pending = False
            self._torch_handler(signal.SIGCHLD, None)

    def stop(self) -> None:
        """Stop watching, and put torch's handler back if it was taken over."""
        self._watching = False
        if self._torch_handler is not None:
            signal.signal(signal.SIGCHLD, self._torch_handler)
            self._torch_handler = None


@dataclass
class EpochResult:
    """One epoch over all ranks: mean loss and accuracy (%), batch counts summed."""

    epoch: int
    loss: float
    accuracy: float
    batches: int
    skipped_batches: int
    lr: float
    margin: float


class DeviceTotals:
    """Device-side :class:`Totals` of step outcomes.

    :meth:`read` brings them to the host (one transfer) and starts over.
    """

    def __init__(self, device: torch.device):
        self.values = zero_totals(device)
        self.outcomes: List[Tuple[int, StepOutcome]] = []

    def add(self, outcome: StepOutcome, batch_size: int, batch: int) -> None:
        good = outcome.good.to(torch.float64)
        self.values += torch.stack(Totals(loss_sum=outcome.loss_sum.to(torch.float64),
                                          correct=outcome.correct.to(torch.float64),
                                          samples=good * batch_size, applied=good,
                                          dropped=1.0 - good))
        self.outcomes.append((batch, outcome))

    def read(self) -> Tuple[Totals, Optional[Tuple[int, StepOutcome]]]:
        """(the totals as floats, the first dropped step as (batch, outcome) or None)."""
        totals = Totals(*self.values.tolist())
        first_dropped = None
        if totals.dropped:  # a second read, only when something went wrong
            flags = torch.stack([outcome.good for _, outcome in self.outcomes]).tolist()
            first_dropped = self.outcomes[flags.index(False)]
        self.values.zero_()
        self.outcomes.clear()
        return totals, first_dropped


def train_epoch(trainer: "Trainer", epoch: int, batches: Iterable[Mapping[str, Any]],
                resume_at: Optional["InterruptedAt"] = None,
                control: Optional["RunControl"] = None) -> EpochResult:
    """Train ``plan.epoch_iter`` batches of ``batches`` and return the epoch's averages
    (loss and accuracy NaN when no step was applied).

    ``resume_at``: the epoch was stopped after its batch B; the first B batches are
    read again (the data order is the epoch's) but not trained, or, when B is its last
    batch, no data is read and the sums it stopped with are the epoch's. ``control``: asked
    after every batch before the epoch's last; when a rank got a stop signal,
    :class:`EpochStopped` is raised there; when a periodic save is due, the trainer
    saves the state there (:meth:`~wespeaker_py.train.trainer.Trainer.save_interrupted`).
    """
    plan, step = trainer.plan, trainer.step
    world, epoch_iter = plan.world, plan.epoch_iter
    step.train()
    first = resume_at.batch if resume_at is not None else 0
    epoch_totals = zero_totals()
    if resume_at is not None:
        epoch_totals += torch.tensor(resume_at.totals[world.rank], dtype=torch.float64)
        if resume_at.after_last_batch:
            return _epoch_result(trainer, epoch, epoch_totals)
    totals = DeviceTotals(world.device)
    progress = progress_bar(total=epoch_iter, initial=first, desc=trainer.progress_name(epoch),
                            unit="batch", enabled=world.is_main, leave=False)
    epoch_start_rng, iterator = _start_epoch_data(batches, resume_at, world)
    worker_deaths = _WorkerDeathsAtNext()
    try:
        for index in range(epoch_iter):
            try:
                worker_deaths.check()
                batch = next(iterator, None)
            except Exception as error:
                failure = _loader_failure(error)
                if failure is None:
                    raise
                raise _loader_failed(trainer, epoch, max(index, first), failure, totals,
                                     epoch_totals, epoch_start_rng, progress) from error
            worker_deaths.watch()
            if batch is None:
                raise TrainingDataError(
                    f"epoch {epoch}: rank {world.rank}'s training data gave "
                    + ("no batch" if index == 0 else f"only {index} of {epoch_iter} batches")
                    + "; no usable utterance is left in its share of the list "
                      "(see the skip summary above)")
            if index < first:
                continue   # trained before the stop
            iteration = (epoch - 1) * epoch_iter + index
            lr = trainer.lr_scheduler.step(iteration)
            trainer.margin_scheduler.step(iteration)
            done = index + 1
            totals.add(step(batch), int(batch["labels"].numel()), done)
            progress.update(1)
            log_point = done % plan.log_batch_interval == 0 or done == epoch_iter
            # the trainer asks at the epoch's end, after its checkpoint
            agreed = (control.agree(log_point) if control is not None and done < epoch_iter
                      else None)
            stop_here = agreed is not None and agreed.stop
            if not (log_point or stop_here):
                continue
            # a log point: the one read of the device since the last
            since_last, first_dropped = totals.read()
            epoch_totals += torch.tensor(since_last, dtype=torch.float64)
            position = EpochPosition(done, epoch_totals.clone(), epoch_start_rng)
            _report(trainer, epoch, position, since_last, first_dropped, iteration, lr, progress)
            if stop_here:
                raise EpochStopped(position)
            if agreed is not None and agreed.save:
                trainer.save_periodically(epoch, position)
                control.saved()
    finally:
        # closing the DataLoader iterator ends the data set's epoch (workers report skips)
        del iterator
        progress.close()
        worker_deaths.stop()   # after the iterator closed: its workers' ends fail nothing
    return _epoch_result(trainer, epoch, epoch_totals)


def _loader_failure(error: Exception) -> Optional[RuntimeError]:
    """torch's error for a failed loader behind ``error``, raised by ``next``: ``error``
    itself, or, for a ConnectionError or EOFError, the death of a worker it stands for (a
    batch the worker queued before it was killed cannot be fetched from it:
    ConnectionResetError, met while the dying worker's threads are still ending, before
    torch can see it dead), found by torch's check within :data:`_DEATH_WAIT_SECONDS`;
    None for neither."""
    if isinstance(error, RuntimeError) and str(error).startswith(_LOADER_FAILURES):
        return error
    # what a worker's queue gives when the worker died under it; an error the data code
    # raised (in this process, or re-raised from a worker) is never one of these
    if not isinstance(error, (ConnectionError, EOFError)):
        return None
    # the check behind torch's SIGCHLD handler (private to torch, hence looked up); it also
    # forgets the failed iterator's workers, so no later SIGCHLD raises the same failure
    check_workers = getattr(signal_handling, "_error_if_any_worker_fails", None)
    if check_workers is None:
        return None
    deadline = time.monotonic() + _DEATH_WAIT_SECONDS
    while True:
        try:
            check_workers()
        except RuntimeError as failure:
            return failure
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _loader_failed(trainer: "Trainer", epoch: int, done: int, error: RuntimeError,
                   totals: DeviceTotals, epoch_totals: torch.Tensor,
                   epoch_start_rng: Mapping[str, Any], progress: "tqdm"
                   ) -> DataLoaderFailedError:
    """The :class:`DataLoaderFailedError` for the loader's ``error`` after ``done`` batches
    of ``epoch``; in one process with the position to save: the steps since the last log
    point are read and reported first, as at a stop (a non-finite one, with ``nonfinite_loss:
    raise``, raises :class:`NonFiniteLossError` instead), and with no batch done the
    generators are put back as the epoch began (the loader's start drew from them)."""
    plan = trainer.plan
    world = plan.world
    position = None
    if not world.is_distributed:
        if totals.outcomes:
            since_last, first_dropped = totals.read()
            epoch_totals += torch.tensor(since_last, dtype=torch.float64)
            position = EpochPosition(done, epoch_totals.clone(), epoch_start_rng)
            _report(trainer, epoch, position, since_last, first_dropped,
                    (epoch - 1) * plan.epoch_iter + done - 1, trainer.lr_scheduler.get_lr(),
                    progress)
        elif done:
            position = EpochPosition(done, epoch_totals.clone(), epoch_start_rng)
        else:
            restore_rng_state(epoch_start_rng, world.device)
            position = EpochPosition(0, zero_totals(), None)
    reason = first_line(error).rstrip(". ")
    if reason.startswith("DataLoader timed out"):
        advice = ("no batch within dataloader_args.timeout: a stuck or very slow read (a "
                  "network disk?); raise the timeout, or 0 to wait for ever")
    else:
        advice = ("a worker killed by the out-of-memory killer? see dmesg; fewer "
                  "dataloader_args.num_workers or a smaller dataloader_args.prefetch_factor "
                  "need less memory")
    return DataLoaderFailedError(f"the training data loader failed at "
                                 f"{trainer.epoch_name(epoch)} after its batch {done}: "
                                 f"{reason} ({advice})", position)


def _epoch_result(trainer: "Trainer", epoch: int, epoch_totals: torch.Tensor) -> EpochResult:
    """The epoch's averages over all ranks from this rank's sums (a collective)."""
    world = trainer.plan.world
    summed = Totals(*all_reduce_sum(epoch_totals.to(world.device), world).tolist())
    samples = summed.samples
    # no applied step: no sample to average over
    return EpochResult(epoch=epoch, loss=summed.loss_sum / samples if samples else math.nan,
                       accuracy=100.0 * summed.correct / samples if samples else math.nan,
                       batches=int(summed.applied + summed.dropped),
                       skipped_batches=int(summed.dropped),
                       lr=trainer.lr_scheduler.get_lr(),
                       margin=trainer.margin_scheduler.get_margin())


def _report(trainer: "Trainer", epoch: int, position: EpochPosition, since_last: Totals,
            first_dropped: Optional[Tuple[int, StepOutcome]], iteration: int, lr: float,
            progress: "tqdm") -> None:
    """Report the log point at ``position``: the steps dropped since the last one (with
    ``nonfinite_loss: raise``, :class:`NonFiniteLossError` at ``position``), then the loss
    and accuracy of those applied (``since_last``) in the log, the progress bar and the
    scalars of ``iteration``."""
    plan = trainer.plan
    if first_dropped is not None:
        message = _dropped_steps_message(trainer.epoch_name(epoch), *first_dropped,
                                         int(since_last.dropped))
        if plan.nonfinite_loss == "raise":
            raise NonFiniteLossError(message, position)
        logger.warning("%s; skipped", message)
    if since_last.samples:
        loss = since_last.loss_sum / since_last.samples
        accuracy = 100.0 * since_last.correct / since_last.samples
        margin = trainer.margin_scheduler.get_margin()
        progress.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.1f}", refresh=False)
        logger.info("%s batch %d/%d lr %.3e margin %.3f loss %.4f acc %.2f",
                    trainer.epoch_name(epoch), position.batch, plan.epoch_iter, lr, margin,
                    loss, accuracy)
        trainer.folder.log_scalars(iteration, loss=loss, accuracy=accuracy, lr=lr,
                                   margin=margin)


def _start_epoch_data(batches: Iterable[Mapping[str, Any]], resume_at: Optional["InterruptedAt"],
                      world) -> Tuple[Mapping[str, Any], Any]:
    """(the generators' state as the epoch begins, the epoch's batch iterator).

    Starting to iterate a DataLoader draws its base seed from torch's generator.
    A resume mid-epoch draws it from the state the stopped run began the epoch
    with, then goes on from the state it stopped in, as an uninterrupted run does.
    """
    rank_states = resume_at.epoch_start_rng if resume_at is not None else None
    if not rank_states or len(rank_states) != world.world_size:
        state = capture_rng_state(world.device)
        return state, _start_workers(batches)
    at_stop = capture_rng_state(world.device)
    restore_rng_state(rank_states[world.rank], world.device)
    iterator = _start_workers(batches)
    restore_rng_state(at_stop, world.device)
    return rank_states[world.rank], iterator


def _start_workers(batches: Iterable[Mapping[str, Any]]) -> Any:
    """``iter(batches)``, with the stop signals blocked and ignored while the loader starts
    its workers, so that a Ctrl-C or SIGTERM to the process group does not end a worker
    that does not ignore them yet (a spawned one still importing torch): the run would
    stop as if a worker had been killed.

    A forked worker inherits both, a spawned one only the ignoring (exec keeps an ignored
    signal ignored, not the block); each lifts its block once it ignores them for good
    (:class:`~wespeaker_py.train.interrupt.WorkerIgnoringStops`). Here a signal that came
    meanwhile stays pending (a blocked signal is never discarded) and reaches the handlers
    put back when the block is lifted. Only in the main thread, where handlers can be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return iter(batches)
    if getattr(batches, "num_workers", 0):
        context = getattr(batches, "multiprocessing_context", None) or multiprocessing
        if context.get_start_method() != "fork":
            # started with the first spawned process, it lifts any block of SIGINT and
            # SIGTERM, which would drop a signal ignored below: start it now
            resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    # a handler installed from C reads back as None and could not be put back: such a
    # signal is only blocked
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not None}
    try:
        return iter(batches)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _dropped_steps_message(epoch_name: str, batch: int, outcome: StepOutcome,
                           dropped: int) -> str:
    keys = outcome.keys
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    what = ("gradients (this rank's loss was finite: the NaN came from another rank "
            "or from the backward pass)" if bool(outcome.loss_finite) else "loss")
    return (f"non-finite {what} at {epoch_name}, batch {batch}; this rank's batch holds "
            f"{shown or 'no keys'}; {dropped} step(s) dropped since the last "
            f"report, each leaving weights, optimizer state and normalisation statistics "
            f"unchanged")
