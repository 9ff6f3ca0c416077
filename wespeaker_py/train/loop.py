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
from typing import Any, Callable, Iterable, List, Mapping, Optional

import torch
from tqdm import tqdm

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
    def from_config(cls, config: Mapping[str, Any], epoch_iter: int) -> "LoopSettings":
        return cls(epoch_iter=epoch_iter,
                   log_interval=max(1, int(config.get("log_batch_interval", 100))))


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


class _Totals:
    """Device-side sums of step outcomes since the last read."""

    def __init__(self, device: torch.device):
        # loss sum, correct, samples, good steps, dropped steps
        self.values = torch.zeros(5, dtype=torch.float64, device=device)
        self.first_bad: Optional[tuple] = None
        self._pending: List[tuple] = []

    def add(self, outcome: StepOutcome, batch_size: int, index: int) -> None:
        good = outcome.good.to(torch.float64)
        self.values += torch.stack([outcome.loss_sum.to(torch.float64),
                                    outcome.correct.to(torch.float64), good * batch_size,
                                    good, 1.0 - good])
        self._pending.append((index, outcome))

    def read(self) -> List[float]:
        """The sums (one device-to-host transfer) and the first dropped step among them."""
        values = self.values.tolist()
        if values[4] and self.first_bad is None:
            flags = torch.stack([o.good for _, o in self._pending]).tolist()
            index, outcome = self._pending[flags.index(False)]
            self.first_bad = (index, outcome.keys, bool(outcome.loss_finite))
        self._pending.clear()
        return values

    def reset(self) -> None:
        self.values.zero_()
        self.first_bad = None


def _describe_bad_step(epoch: int, bad: tuple, dropped: int) -> str:
    index, keys, loss_finite = bad
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    what = ("gradients (this rank's loss was finite: the NaN came from another rank "
            "or from the backward pass)" if loss_finite else "loss")
    return (f"non-finite {what} at epoch {epoch}, batch {index}; this rank's batch holds "
            f"{shown or 'no keys'}; {dropped} step(s) dropped since the last report, "
            f"each leaving weights, optimizer state and normalisation statistics unchanged")


def train_epoch(runner: StepRunner, settings: LoopSettings, ctx: DistContext, epoch: int,
                batches: Iterable[Mapping[str, Any]], lr_scheduler, margin_scheduler,
                log_scalars: Callable[..., None] = lambda step, **values: None) -> EpochResult:
    """Train ``settings.epoch_iter`` batches of ``batches`` and return the epoch's averages."""
    runner.train()
    epoch_iter = settings.epoch_iter
    epoch_totals = torch.zeros(5, dtype=torch.float64)
    interval = _Totals(ctx.device)
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
            interval.add(runner(batch), int(batch["labels"].numel()), index + 1)
            progress.update(1)
            if (index + 1) % settings.log_interval == 0 or index + 1 == epoch_iter:
                values = interval.read()
                epoch_totals += torch.tensor(values, dtype=torch.float64)
                _report(interval, values, settings, epoch, index + 1, lr,
                        margin_scheduler.get_margin(), runner, progress, log_scalars,
                        iteration)
                interval.reset()
    finally:
        # closing the iterator ends the data set's epoch (it logs its skip summary)
        del iterator
        progress.close()
    totals = all_reduce_sum(epoch_totals.to(ctx.device), ctx).tolist()
    samples = max(1.0, totals[2])
    return EpochResult(epoch=epoch, loss=totals[0] / samples, accuracy=100.0 * totals[1] / samples,
                       batches=int(totals[3] + totals[4]), skipped_batches=int(totals[4]),
                       lr=lr_scheduler.get_lr(), margin=margin_scheduler.get_margin())


def _report(interval: _Totals, values: List[float], settings: LoopSettings, epoch: int,
            batch: int, lr: float, margin: float, runner: StepRunner, progress,
            log_scalars: Callable[..., None], iteration: int) -> None:
    loss_sum, correct, samples, _, dropped = values
    if interval.first_bad is not None:
        message = _describe_bad_step(epoch, interval.first_bad, int(dropped))
        if runner.settings.nonfinite_policy == "raise":
            raise NonFiniteLossError(message + ". Lower the learning rate, turn off enable_amp, "
                                     "or set nonfinite_loss: skip to drop such batches")
        logger.warning("%s; skipped", message)
    if not samples:
        return
    mean_loss, accuracy = loss_sum / samples, 100.0 * correct / samples
    progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{accuracy:.1f}")
    logger.info("epoch %d batch %d/%d lr %.3e margin %.3f loss %.4f acc %.2f",
                epoch, batch, settings.epoch_iter, lr, margin, mean_loss, accuracy)
    log_scalars(iteration, loss=mean_loss, accuracy=accuracy, lr=lr, margin=margin)
