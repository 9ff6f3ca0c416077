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
from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple

import torch
from tqdm import tqdm

from wespeaker_py.config import TrainConfig
from wespeaker_py.train.distributed import DistContext, all_reduce_sum
from wespeaker_py.train.step import NonFiniteLossError, StepOutcome, StepRunner
from wespeaker_py.utils.cli_errors import RunFailedError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


class TrainingDataError(RunFailedError):
    """The training data gave fewer batches than an epoch needs (the command exits 1)."""


@dataclass(frozen=True)
class LoopSettings:
    """What the loop reads from the config."""

    epoch_iter: int
    log_interval: int = 100

    @classmethod
    def from_config(cls, config: TrainConfig, epoch_iter: int) -> "LoopSettings":
        return cls(epoch_iter=epoch_iter, log_interval=config.log_batch_interval)


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


@dataclass
class _Interval:
    """The steps since the last log point, read back to the host."""

    loss_sum: float
    correct: float
    samples: float
    steps: float
    dropped: float
    first_dropped: Optional[Tuple[int, List[str], bool]]  # batch, keys, loss finite here

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss_sum, self.correct, self.samples, self.steps,
                             self.dropped], dtype=torch.float64)


class _DeviceTotals:
    """Device-side sums of step outcomes; :meth:`flush` reads them (one transfer) and resets."""

    def __init__(self, device: torch.device):
        # loss sum, correct, samples, applied steps, dropped steps
        self.values = torch.zeros(5, dtype=torch.float64, device=device)
        self._outcomes: List[Tuple[int, StepOutcome]] = []

    def add(self, outcome: StepOutcome, batch_size: int, batch: int) -> None:
        good = outcome.good.to(torch.float64)
        self.values += torch.stack([outcome.loss_sum.to(torch.float64),
                                    outcome.correct.to(torch.float64), good * batch_size,
                                    good, 1.0 - good])
        self._outcomes.append((batch, outcome))

    def flush(self) -> _Interval:
        loss_sum, correct, samples, steps, dropped = self.values.tolist()
        first_dropped = None
        if dropped:  # a second read, only when something went wrong
            flags = torch.stack([outcome.good for _, outcome in self._outcomes]).tolist()
            batch, outcome = self._outcomes[flags.index(False)]
            first_dropped = (batch, outcome.keys, bool(outcome.loss_finite))
        self.values.zero_()
        self._outcomes.clear()
        return _Interval(loss_sum, correct, samples, steps, dropped, first_dropped)


def _dropped_steps_message(epoch: int, interval: _Interval) -> str:
    batch, keys, loss_finite = interval.first_dropped
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    what = ("gradients (this rank's loss was finite: the NaN came from another rank "
            "or from the backward pass)" if loss_finite else "loss")
    return (f"non-finite {what} at epoch {epoch}, batch {batch}; this rank's batch holds "
            f"{shown or 'no keys'}; {int(interval.dropped)} step(s) dropped since the last "
            f"report, each leaving weights, optimizer state and normalisation statistics "
            f"unchanged")


def train_epoch(runner: StepRunner, settings: LoopSettings, ctx: DistContext, epoch: int,
                batches: Iterable[Mapping[str, Any]], lr_scheduler, margin_scheduler,
                log_scalars: Callable[..., None] = lambda step, **values: None) -> EpochResult:
    """Train ``settings.epoch_iter`` batches of ``batches`` and return the epoch's averages."""
    runner.train()
    epoch_iter = settings.epoch_iter
    epoch_totals = torch.zeros(5, dtype=torch.float64)
    totals = _DeviceTotals(ctx.device)
    progress = tqdm(total=epoch_iter, desc=f"epoch {epoch}", unit="batch",
                    disable=not ctx.is_main, leave=False, dynamic_ncols=True)
    iterator = iter(batches)
    try:
        for index in range(epoch_iter):
            batch = next(iterator, None)
            if batch is None:
                raise TrainingDataError(
                    f"epoch {epoch}: rank {ctx.rank}'s training data gave "
                    + ("no batch" if index == 0 else f"only {index} of {epoch_iter} batches")
                    + "; no usable utterance is left in its share of the list "
                      "(see the skip summary above)")
            iteration = (epoch - 1) * epoch_iter + index
            lr = lr_scheduler.step(iteration)
            margin_scheduler.step(iteration)
            totals.add(runner(batch), int(batch["labels"].numel()), index + 1)
            progress.update(1)
            if (index + 1) % settings.log_interval and index + 1 < epoch_iter:
                continue
            interval = totals.flush()
            epoch_totals += interval.as_tensor()
            if interval.first_dropped is not None:
                message = _dropped_steps_message(epoch, interval)
                if runner.settings.nonfinite_policy == "raise":
                    raise NonFiniteLossError(message + ". Lower the learning rate, turn off "
                                             "enable_amp, or set nonfinite_loss: skip to drop "
                                             "such batches")
                logger.warning("%s; skipped", message)
            if interval.samples:
                _log_interval(interval, epoch, index + 1, epoch_iter, lr,
                              margin_scheduler.get_margin(), progress, log_scalars, iteration)
    finally:
        # closing the DataLoader iterator ends the data set's epoch (workers report skips)
        del iterator
        progress.close()
    summed = all_reduce_sum(epoch_totals.to(ctx.device), ctx).tolist()
    samples = max(1.0, summed[2])
    return EpochResult(epoch=epoch, loss=summed[0] / samples, accuracy=100.0 * summed[1] / samples,
                       batches=int(summed[3] + summed[4]), skipped_batches=int(summed[4]),
                       lr=lr_scheduler.get_lr(), margin=margin_scheduler.get_margin())


def _log_interval(interval: _Interval, epoch: int, batch: int, epoch_iter: int, lr: float,
                  margin: float, progress, log_scalars: Callable[..., None],
                  iteration: int) -> None:
    mean_loss = interval.loss_sum / interval.samples
    accuracy = 100.0 * interval.correct / interval.samples
    progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{accuracy:.1f}")
    logger.info("epoch %d batch %d/%d lr %.3e margin %.3f loss %.4f acc %.2f",
                epoch, batch, epoch_iter, lr, margin, mean_loss, accuracy)
    log_scalars(iteration, loss=mean_loss, accuracy=accuracy, lr=lr, margin=margin)
