"""One epoch: exactly ``epoch_iter`` steps, the schedules, and logging every few batches.

The loop never waits for the device between log points: step results are added
up on the device and read (one transfer) every ``log_batch_interval`` batches
and at the end of the epoch. That is also when non-finite steps are reported:
with ``nonfinite_loss: raise`` the run stops there, naming the first such
batch's utterance keys (the step itself was already undone on the device).

Every rank runs exactly ``epoch_iter`` batches; the training data set repeats
its list when a rank's share runs short, as WeSpeaker's does, so no rank needs
to ask the others whether data remains. A loader that still ends early has no
usable utterance left, which is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional, Tuple

import torch

from wespeaker_py.errors import RunFailedError
from wespeaker_py.train.checkpoint import capture_rng_state, restore_rng_state
from wespeaker_py.train.distributed import all_reduce_sum
from wespeaker_py.train.step import NonFiniteLossError, StepOutcome
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.progress import progress_bar

if TYPE_CHECKING:
    from wespeaker_py.train.interrupt import InterruptedAt, StopRequest
    from wespeaker_py.train.trainer import Trainer

logger = get_logger(__name__)


class TrainingDataError(RunFailedError):
    """The training data gave fewer batches than an epoch needs (the command exits 1)."""


class EpochStopped(RunFailedError):
    """The ranks agreed to stop after ``batch`` batches; ``totals``: the epoch's sums so far;
    ``epoch_start_rng``: this rank's generators as the epoch began. The trainer catches it,
    saves the state and raises :class:`~wespeaker_py.train.interrupt.TrainingStopped`."""

    def __init__(self, batch: int, totals: torch.Tensor, epoch_start_rng: Mapping[str, Any]):
        super().__init__(f"stopped after batch {batch}")
        self.batch = batch
        self.totals = totals
        self.epoch_start_rng = epoch_start_rng


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
    """Device-side sums of step outcomes: loss sum, correct, samples, applied and dropped steps.

    :meth:`read` brings them to the host (one transfer) and starts over.
    """

    def __init__(self, device: torch.device):
        self.values = torch.zeros(5, dtype=torch.float64, device=device)
        self.outcomes: List[Tuple[int, StepOutcome]] = []

    def add(self, outcome: StepOutcome, batch_size: int, batch: int) -> None:
        good = outcome.good.to(torch.float64)
        self.values += torch.stack([outcome.loss_sum.to(torch.float64),
                                    outcome.correct.to(torch.float64), good * batch_size,
                                    good, 1.0 - good])
        self.outcomes.append((batch, outcome))

    def read(self) -> Tuple[List[float], Optional[Tuple[int, StepOutcome]]]:
        """(the five sums, the first dropped step as (batch, outcome) or None)."""
        values = self.values.tolist()
        first_dropped = None
        if values[4]:  # a second read, only when something went wrong
            flags = torch.stack([outcome.good for _, outcome in self.outcomes]).tolist()
            first_dropped = self.outcomes[flags.index(False)]
        self.values.zero_()
        self.outcomes.clear()
        return values, first_dropped


def train_epoch(trainer: "Trainer", epoch: int, batches: Iterable[Mapping[str, Any]],
                resume_at: Optional["InterruptedAt"] = None,
                stop: Optional["StopRequest"] = None) -> EpochResult:
    """Train ``plan.epoch_iter`` batches of ``batches`` and return the epoch's averages.

    ``resume_at``: the epoch was stopped after its batch B; the first B batches are
    read again (the data order is the epoch's) but not trained. ``stop``: asked at
    each log point before the epoch's end (on one process, after every batch);
    when a rank got a stop signal, :class:`EpochStopped` is raised there.
    """
    plan, step = trainer.plan, trainer.step
    world, epoch_iter = plan.world, plan.epoch_iter
    step.train()
    first = resume_at.batch if resume_at is not None else 0
    epoch_totals = torch.zeros(5, dtype=torch.float64)
    if resume_at is not None:
        epoch_totals += torch.tensor(resume_at.totals[world.rank], dtype=torch.float64)
    totals = DeviceTotals(world.device)
    progress = progress_bar(total=epoch_iter, initial=first, desc=f"epoch {epoch}",
                            unit="batch", enabled=world.is_main, leave=False)
    epoch_start_rng, iterator = _start_epoch_data(batches, resume_at, world)
    try:
        for index in range(epoch_iter):
            batch = next(iterator, None)
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
            totals.add(step(batch), int(batch["labels"].numel()), index + 1)
            progress.update(1)
            stop_now = (stop is not None and not world.is_distributed
                        and stop.signal_number is not None)
            if ((index + 1) % plan.log_batch_interval and index + 1 < epoch_iter
                    and not stop_now):
                continue
            # a log point: the one read of the device since the last
            values, first_dropped = totals.read()
            epoch_totals += torch.tensor(values, dtype=torch.float64)
            loss_sum, correct, samples, _, dropped = values
            if first_dropped is not None:
                message = _dropped_steps_message(epoch, *first_dropped, int(dropped))
                if plan.nonfinite_loss == "raise":
                    raise NonFiniteLossError(message + ". Lower the learning rate, turn off "
                                             "enable_amp, or set nonfinite_loss: skip to drop "
                                             "such batches")
                logger.warning("%s; skipped", message)
            if samples:
                loss, accuracy = loss_sum / samples, 100.0 * correct / samples
                margin = trainer.margin_scheduler.get_margin()
                progress.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.1f}", refresh=False)
                logger.info("epoch %d batch %d/%d lr %.3e margin %.3f loss %.4f acc %.2f",
                            epoch, index + 1, epoch_iter, lr, margin, loss, accuracy)
                trainer.folder.log_scalars(iteration, loss=loss, accuracy=accuracy, lr=lr,
                                           margin=margin)
            if stop is not None and index + 1 < epoch_iter and stop.agreed(world):
                raise EpochStopped(index + 1, epoch_totals, epoch_start_rng)
    finally:
        # closing the DataLoader iterator ends the data set's epoch (workers report skips)
        del iterator
        progress.close()
    summed = all_reduce_sum(epoch_totals.to(world.device), world).tolist()
    samples = max(1.0, summed[2])
    return EpochResult(epoch=epoch, loss=summed[0] / samples, accuracy=100.0 * summed[1] / samples,
                       batches=int(summed[3] + summed[4]), skipped_batches=int(summed[4]),
                       lr=trainer.lr_scheduler.get_lr(),
                       margin=trainer.margin_scheduler.get_margin())


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
        return state, iter(batches)
    at_stop = capture_rng_state(world.device)
    restore_rng_state(rank_states[world.rank], world.device)
    iterator = iter(batches)
    restore_rng_state(at_stop, world.device)
    return rank_states[world.rank], iterator


def _dropped_steps_message(epoch: int, batch: int, outcome: StepOutcome, dropped: int) -> str:
    keys = outcome.keys
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    what = ("gradients (this rank's loss was finite: the NaN came from another rank "
            "or from the backward pass)" if bool(outcome.loss_finite) else "loss")
    return (f"non-finite {what} at epoch {epoch}, batch {batch}; this rank's batch holds "
            f"{shown or 'no keys'}; {dropped} step(s) dropped since the last "
            f"report, each leaving weights, optimizer state and normalisation statistics "
            f"unchanged")
