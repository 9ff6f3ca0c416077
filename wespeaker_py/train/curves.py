"""Training curves read back from ``train.log`` and drawn as one PNG.

Two log formats are read:

* ours: ``epoch E batch B/N lr L margin M loss X acc A`` every
  ``log_batch_interval`` batches, ``epoch E done: loss X acc A lr L margin M``
  once per epoch, and ``training epochs F to T`` when a run (or a resume) starts;
* WeSpeaker's table rows (``| E | B | lr | margin | loss | acc |``, drawn by
  tableprint with ``│`` or ``|``), so a run of WeSpeaker's own code can be drawn too.

A resume starts again at epoch F (``training epochs F to T``, with ``(epoch F
from its batch B)`` after a stop mid-epoch, or ``(epoch F from its end, after its
last batch N)`` after a stop at an epoch's last batch), so every point from there on
logged before that line belongs to a run that was cut short or rolled back, and is
dropped: the curves show the run that produced the checkpoints. (WeSpeaker logs
its table header at each start instead; the first row after it gives F.)

A run that is one part of a larger job (a fine-tuning phase) puts a label before
our lines (``frozen epoch 1 batch ...``); they are read alike.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from wespeaker_py.utils.tables import DataFormatError

_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_BATCH = re.compile(rf"epoch (\d+) batch (\d+)/(\d+) lr {_NUMBER} margin {_NUMBER} "
                    rf"loss {_NUMBER} acc {_NUMBER}")
_EPOCH = re.compile(rf"epoch (\d+) done: loss {_NUMBER} acc {_NUMBER} lr {_NUMBER} "
                    rf"margin {_NUMBER}")
_START = re.compile(r"training epochs (\d+) to (\d+)(?: \(epoch \d+ from its (?:batch (\d+)|"
                    r"end, after its last batch (\d+))\))?")
_TABLE_HEADER = re.compile(r"[|│]\s*Epoch\s*[|│]\s*Batch\s*[|│]")
_TABLE_ROW = re.compile(r"[|│]\s*(\d+)\s*[|│]\s*(\d+)\s*" + (r"[|│]\s*" + _NUMBER + r"\s*") * 4
                        + r"[|│]\s*$")


@dataclass
class TrainingCurves:
    """Logged points by (epoch, batch): lr, margin, loss, accuracy; per-epoch means.

    ``batches_per_epoch`` is known from our log lines (``B/N``); for WeSpeaker's
    rows it is the largest batch number logged in the epoch (its last row is
    the epoch's end).
    """

    batches: Dict[Tuple[int, int], Tuple[float, float, float, float]] = field(default_factory=dict)
    epochs: Dict[int, Tuple[float, float]] = field(default_factory=dict)
    batches_per_epoch: Dict[int, int] = field(default_factory=dict)

    def restart_at(self, first_epoch: int, first_batch: int = 1) -> None:
        """Forget what was logged from batch ``first_batch`` of ``first_epoch`` on (a resume
        redoes it)."""
        self.batches = {key: value for key, value in self.batches.items()
                        if key < (first_epoch, first_batch)}
        self.epochs = {key: value for key, value in self.epochs.items() if key < first_epoch}
        self.batches_per_epoch = {key: value for key, value in self.batches_per_epoch.items()
                                  if key < first_epoch or (key == first_epoch and first_batch > 1)}

    def add_batch(self, epoch: int, batch: int, total: int,
                  values: Tuple[float, float, float, float]) -> None:
        """One log point: ``values`` = (lr, margin, loss, accuracy %)."""
        self.batches[(epoch, batch)] = values
        self.batches_per_epoch[epoch] = max(total, self.batches_per_epoch.get(epoch, 0))

    def last_points(self) -> Dict[int, Tuple[float, float, float, float]]:
        """Each epoch's last log point (lr, margin, loss, accuracy %), by epoch.

        In WeSpeaker's table the loss and accuracy are running means over the epoch, so
        its epoch's last row is the epoch's result (ours log that in ``epochs``).
        """
        return {epoch: self.batches[(epoch, batch)] for epoch, batch in sorted(self.batches)}

    def series(self) -> Tuple[List[float], List[Tuple[float, float, float, float]]]:
        """The log points in order, with x in epochs (epoch 2, half done: 1.5)."""
        xs, values = [], []
        for (epoch, batch) in sorted(self.batches):
            xs.append(epoch - 1 + batch / max(1, self.batches_per_epoch[epoch]))
            values.append(self.batches[(epoch, batch)])
        return xs, values


def read_training_curves(log_path: str) -> TrainingCurves:
    """The curves of ``log_path`` (our ``train.log`` or WeSpeaker's).

    Raises:
        DataFormatError: the file holds no training progress line; the message names it.
    """
    curves = TrainingCurves()
    header_seen = False   # WeSpeaker's: the next row starts a run
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if _TABLE_HEADER.search(line):
                header_seen = True
            elif _read_line(curves, line, header_seen):
                header_seen = False
    if not curves.batches and not curves.epochs:
        raise DataFormatError(log_path, None, "no training progress lines (neither 'epoch E "
                              "batch B/N ... loss X acc A' nor WeSpeaker's '| epoch | batch | "
                              "lr | margin | loss | acc |' rows)")
    return curves


def _read_line(curves: TrainingCurves, line: str, run_starts: bool) -> bool:
    """Take what ``line`` says into ``curves``; True if it was a WeSpeaker table row.

    ``run_starts``: a WeSpeaker header came before, so a row starts a run at its epoch.
    """
    match = _START.search(line)
    if match:
        first_batch, after_last = match.group(3), match.group(4)
        curves.restart_at(int(match.group(1)), int(first_batch) if first_batch
                          else int(after_last) + 1 if after_last else 1)
        return False
    match = _BATCH.search(line)
    if match:
        epoch, batch, total = (int(match.group(i)) for i in (1, 2, 3))
        curves.add_batch(epoch, batch, total, tuple(float(match.group(i)) for i in (4, 5, 6, 7)))
        return False
    match = _EPOCH.search(line)
    if match:
        curves.epochs[int(match.group(1))] = (float(match.group(2)), float(match.group(3)))
        return False
    match = _TABLE_ROW.search(line.rstrip())
    if not match:
        return False
    epoch, batch = int(match.group(1)), int(match.group(2))
    if run_starts:
        curves.restart_at(epoch)
    curves.add_batch(epoch, batch, batch, tuple(float(match.group(i)) for i in (3, 4, 5, 6)))
    return True


def plot_training_curves(curves: TrainingCurves, png_path: str, title: str = "") -> None:
    """Loss, accuracy and lr / margin against epochs, in three panels, written atomically."""
    from wespeaker_py.utils.plotting import new_figure, save_figure
    xs, values = curves.series()
    lr, margin, loss, accuracy = ([v[i] for v in values] for i in range(4))
    figure = new_figure((7.0, 8.0))
    loss_axes, accuracy_axes, lr_axes = figure.subplots(3, 1, sharex=True)
    loss_axes.plot(xs, loss, lw=0.8, color="tab:blue", label="log points")
    accuracy_axes.plot(xs, accuracy, lw=0.8, color="tab:green", label="log points")
    if curves.epochs:
        epochs = sorted(curves.epochs)
        loss_axes.plot(epochs, [curves.epochs[e][0] for e in epochs], "o-", ms=3,
                       color="tab:orange", label="epoch mean")
        accuracy_axes.plot(epochs, [curves.epochs[e][1] for e in epochs], "o-", ms=3,
                           color="tab:orange", label="epoch mean")
    loss_axes.set_ylabel("loss")
    if all(x > 0 for x in loss if math.isfinite(x)) and _spans_decades(loss):
        loss_axes.set_yscale("log")
    accuracy_axes.set_ylabel("accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    lr_axes.plot(xs, lr, color="tab:purple")
    if _spans_decades(lr):
        lr_axes.set_yscale("log")
    lr_axes.set_ylabel("learning rate", color="tab:purple")
    lr_axes.set_xlabel("epoch")
    lr_axes.grid(alpha=0.3)
    margin_axes = lr_axes.twinx()
    margin_axes.plot(xs, margin, color="tab:red", ls="--")
    margin_axes.set_ylabel("margin", color="tab:red")
    if title:
        loss_axes.set_title(title)
    figure.tight_layout()
    save_figure(figure, png_path)


def _spans_decades(values: List[float]) -> bool:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return bool(finite) and max(finite) / min(finite) > 20
