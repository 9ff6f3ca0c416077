"""Averaging the weights of the last checkpoints of a run (``avg_model.pt``)."""
from __future__ import annotations

import os
from typing import Dict, List

import torch

from wespeaker_py.errors import ModelSourceError, WespeakerError
from wespeaker_py.runtime.checkpoint import model_state_of
from wespeaker_py.train.checkpoint import (checkpoints_by_epoch, epoch_from_name,
                                           is_training_checkpoint)
from wespeaker_py.utils.atomic_files import require_writable, save_torch
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import same_file
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.torch_files import read_checkpoint

logger = get_logger(__name__)


class AveragingError(WespeakerError, ValueError):
    """Checkpoints that cannot be averaged: too few, a missing folder, tensors that differ."""


def select_checkpoints(src_dir: str, num: int, min_epoch: int = 0,
                       max_epoch: int = 65536) -> List[str]:
    """The ``num`` latest ``model_<epoch>.pt`` in ``src_dir`` with min_epoch <= epoch <= max_epoch.

    Other files (``avg_model.pt``, ``final_model.pt``) are ignored. Fewer than
    ``num`` candidates is an error, as averaging fewer silently would change
    the model.

    The chosen epochs are taken as they are (as WeSpeaker's average_model does),
    but a WARNING names them when two of them lie further apart than the closest
    two candidates do: the trainer saves each of a run's last ``num_avg`` epochs
    and every ``save_epoch_interval``-th, so a finished run averaged over its last
    ``num_avg`` (or a run saved only at a regular interval) is evenly spaced, while
    e.g. epochs 10, 15, 16, 17 of {5, 10, 15, 16, 17} mix an early, high-learning-rate
    checkpoint into the average (``num`` above the run's ``num_avg``, an unfinished
    or resumed run, or removed checkpoints).
    """
    if num <= 0:
        raise AveragingError(f"--num must be positive, got {num}")
    if os.path.isfile(src_dir):
        parent = os.path.dirname(os.path.abspath(src_dir))
        raise AveragingError(f"checkpoint directory {src_dir} is a file, not a folder; give "
                             f"the folder holding model_<epoch>.pt, e.g. {parent}")
    if not os.path.isdir(src_dir):
        raise AveragingError(f"checkpoint directory {src_dir} does not exist")
    by_epoch = {}
    for name in checkpoints_by_epoch(src_dir):
        epoch = epoch_from_name(name)
        if min_epoch <= epoch <= max_epoch:
            by_epoch[epoch] = os.path.join(src_dir, name)
    if len(by_epoch) < num:
        raise AveragingError(f"{src_dir} holds {len(by_epoch)} checkpoints model_<epoch>.pt with "
                             f"{min_epoch} <= epoch <= {max_epoch}; {num} were asked for")
    candidates = sorted(by_epoch)
    chosen = candidates[-num:]
    _warn_of_uneven_spacing(src_dir, chosen, candidates)
    return [by_epoch[epoch] for epoch in chosen]


def _warn_of_uneven_spacing(src_dir: str, chosen: List[int], candidates: List[int]) -> None:
    """Warn when ``chosen`` has a gap wider than the closest two ``candidates``."""
    if len(chosen) < 2:
        return
    spacing = min(later - earlier for earlier, later in zip(candidates, candidates[1:]))
    gaps = [f"{earlier} -> {later}" for earlier, later in zip(chosen, chosen[1:])
            if later - earlier > spacing]
    if gaps:
        logger.warning("%s: averaging epochs %s, which are not evenly spaced (wider than the "
                       "%d epoch(s) between the closest checkpoints there: %s), so the average "
                       "reaches back to epoch %d (a --num above the run's num_avg, an "
                       "unfinished or resumed run, removed checkpoints?); give --num or "
                       "--max_epoch to average others", src_dir, ", ".join(map(str, chosen)),
                       spacing, ", ".join(gaps), chosen[0])


def average_state_dicts(paths: List[str]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of the model weights stored in ``paths``.

    Floating-point tensors are summed in float64 and cast back to their
    dtype; integer buffers (BatchNorm's ``num_batches_tracked``) are taken from
    the last checkpoint. Any difference in tensor names or shapes is an error
    naming the file and the tensor.
    """
    if not paths:
        raise AveragingError("no checkpoints to average")
    sums: Dict[str, torch.Tensor] = {}
    reference: Dict[str, torch.Tensor] = {}
    for path in progress_bar(paths, desc="averaging", unit="ckpt"):
        # mapped, not read: only the model tensors are paged in, never the optimizer state
        state = model_state_of(read_checkpoint(path, lazy=True))
        if not reference:
            reference = dict(state)
            sums = {key: value.double().clone() if value.is_floating_point() else value.clone()
                    for key, value in state.items()}
            continue
        if set(state) != set(reference):
            differing = sorted(set(state) ^ set(reference))[0]
            raise AveragingError(f"{path}: tensor '{differing}' is not in every checkpoint")
        for key, value in state.items():
            if value.shape != reference[key].shape:
                raise AveragingError(f"{path}: tensor '{key}' has shape {tuple(value.shape)}, "
                                     f"{tuple(reference[key].shape)} in {paths[0]}")
            if value.is_floating_point():
                sums[key] += value.double()
            else:
                sums[key] = value.clone()   # a copy: nothing returned maps the file
    return {key: (total / len(paths)).to(reference[key].dtype)
            if reference[key].is_floating_point() else total
            for key, total in sums.items()}


def average_checkpoints(src_dir: str, num: int, dst_model: str, min_epoch: int = 0,
                        max_epoch: int = 65536) -> List[str]:
    """Average the ``num`` latest checkpoints of ``src_dir`` into ``dst_model``.

    The result is a bare state_dict (like WeSpeaker's ``avg_model.pt``),
    written atomically; ``dst_model`` is checked (:func:`check_destination`)
    before any checkpoint is loaded. Returns the averaged paths.
    """
    paths = select_checkpoints(src_dir, num, min_epoch, max_epoch)
    check_destination(dst_model, paths)
    averaged = average_state_dicts(paths)
    save_torch(averaged, dst_model)
    return paths


def check_destination(dst_model: str, paths: List[str]) -> None:
    """Refuse, before any work, a ``dst_model`` that would replace a training checkpoint.

    The bare state_dict written there would lose the optimizer state a run resumes
    from. Refused (links resolved, hard links too): one of ``paths``, a file named
    ``model_<epoch>.pt``, and an existing file holding a training checkpoint; then
    ``dst_model`` must be writable (not a folder).
    """
    real = os.path.realpath(dst_model)
    shown = f"{dst_model} (a link to {real})" if os.path.islink(dst_model) else dst_model
    if any(same_file(path, dst_model) for path in paths):
        raise AveragingError(f"--dst_model {shown} is one of the checkpoints being averaged; "
                             f"write the average to another file, e.g. avg_model.pt")
    if epoch_from_name(real) is not None:
        raise AveragingError(f"--dst_model {shown} is named like a training checkpoint "
                             f"(model_<epoch>.pt), which a run resumes from; write the "
                             f"average to another file, e.g. avg_model.pt")
    require_writable(dst_model)
    if os.path.isfile(real):
        try:
            existing = read_checkpoint(real, lazy=True)
        except ModelSourceError:
            return  # not a checkpoint: nothing to lose by replacing it
        if is_training_checkpoint(existing):
            raise AveragingError(f"--dst_model {shown} holds a training checkpoint (with "
                                 f"optimizer state) that the average would replace; write "
                                 f"the average to another file, e.g. avg_model.pt")
