"""Reading checkpoints and loading their weights into a model: the one path every user shares.

Training (resume, ``model_init``, the LM head size) and
:func:`~wespeaker_py.runtime.builder.load_embedder` (extraction, the exporters,
the Python API, diarization) all load weights through :func:`load_weights`,
which refuses any mismatch but the documented head rules. A checkpoint is either a training
checkpoint (``{"model": state_dict, "optimizer": ..., ...}``, see
:mod:`wespeaker_py.train.checkpoint`) or a bare state_dict (WeSpeaker's
``avg_model.pt``). In a model state the training head lives under
``projection.`` and an SSL front-end under ``frontend.``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn as nn

from wespeaker_py.dataset.speed import SPEEDS
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.frontend.ssl import with_pretrained_frontend_weights
from wespeaker_py.utils.logging_utils import get_logger
# the one reader of torch files, read from here too (training, averaging, the loaders)
from wespeaker_py.utils.torch_files import CheckpointFileNotFound, read_checkpoint  # noqa: F401

logger = get_logger(__name__)

HEAD_PREFIX = "projection."
FRONTEND_PREFIX = "frontend."


class CheckpointMismatchError(ModelSourceError):
    """A checkpoint's tensors do not fit the model; the message names the tensor."""


def model_state_of(checkpoint: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The model state_dict inside any supported checkpoint layout."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _log_head_truncation(source: str, key: str, checkpoint_rows: int, model_rows: int) -> None:
    """Say that ``model_rows`` of the ``checkpoint_rows`` rows of head tensor ``key`` load.

    A head of exactly one row block per speed (:data:`SPEEDS`) is the speed-perturbed
    head of this model's speakers, the speakers at normal speed first (label
    ``spk + num_spks * speed_index``): its first rows are theirs. Any other size is the
    head of another speaker list, whose first rows are other speakers' classes: warned.
    """
    if checkpoint_rows == len(SPEEDS) * model_rows:
        logger.info("%s: loading the first %d of %d rows of %s (the speakers at normal "
                    "speed of a speed-perturbed head)", source, model_rows, checkpoint_rows,
                    key)
        return
    logger.warning("%s: tensor '%s' has %d rows in the checkpoint and %d in the model, not "
                   "the %d (%dx) of a speed-perturbed head of the same speakers: its first "
                   "%d rows are loaded, but they are the classes of the checkpoint's "
                   "speakers (another speaker list or corpus), not this model's",
                   source, key, checkpoint_rows, model_rows, len(SPEEDS) * model_rows,
                   len(SPEEDS), model_rows)


def state_in_model_names(model: nn.Module, state: Mapping[str, torch.Tensor],
                         source: str) -> Dict[str, torch.Tensor]:
    """``state`` as ``model`` loads it: a WeSpeaker/s3prl WavLM front-end renamed into this
    package's names, a frozen run's missing WavLM weights taken from the model
    (:func:`~wespeaker_py.frontend.ssl.with_pretrained_frontend_weights`); what does not fit
    raises :class:`CheckpointMismatchError` naming the tensor and ``source``."""
    try:
        return with_pretrained_frontend_weights(model, state, source)
    except ValueError as err:
        raise CheckpointMismatchError(str(err)) from None


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                 allow_head_truncation: bool = True, allow_missing_head: bool = False,
                 key_prefix: str = "") -> None:
    """Copy ``state`` into ``model``, refusing any mismatch except the LM head rule.

    The LM rule: a head tensor (``projection.*``) whose checkpoint version has
    more rows than the model's, and the same size otherwise, loads its first
    rows (a head trained with speed-perturbed speakers as extra classes
    feeding a head without them); a size other than 3x the model's is logged as a
    warning (:func:`_log_head_truncation`). ``allow_missing_head`` lets a checkpoint
    without any head tensor initialise only the speaker model. A checkpoint
    without any of the model's SSL front-end WavLM weights (a frozen run's)
    keeps the model's own, pretrained ones, and one saved by WeSpeaker's s3prl
    front-end is renamed (:func:`state_in_model_names`). Every other missing,
    unexpected or differently shaped tensor raises :class:`CheckpointMismatchError`
    naming it and ``source``; ``key_prefix`` is put before the names it prints
    (``frontend.`` when ``model`` is a front-end loaded from a whole model's state).
    """
    state = state_in_model_names(model, state, source)
    own = model.state_dict()
    to_load: Dict[str, torch.Tensor] = {}
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise CheckpointMismatchError(
            f"{source}: tensor '{key_prefix}{unexpected[0]}' is not in the model "
            f"({len(unexpected)} unexpected tensors)")
    skip_head = allow_missing_head and not any(key.startswith(HEAD_PREFIX) for key in state)
    for key, target in own.items():
        if key not in state:
            if skip_head and key.startswith(HEAD_PREFIX):
                continue
            raise CheckpointMismatchError(f"{source}: tensor '{key_prefix}{key}' is missing")
        tensor = state[key]
        if tensor.shape != target.shape:
            fits_lm_rule = (allow_head_truncation and key.startswith(HEAD_PREFIX)
                            and tensor.dim() >= 1 and tensor.shape[1:] == target.shape[1:]
                            and tensor.shape[0] > target.shape[0])
            if not fits_lm_rule:
                raise CheckpointMismatchError(
                    f"{source}: tensor '{key_prefix}{key}' has shape {tuple(tensor.shape)} in the "
                    f"checkpoint but {tuple(target.shape)} in the model")
            _log_head_truncation(source, key, tensor.shape[0], target.shape[0])
            tensor = tensor[:target.shape[0]]
        to_load[key] = tensor
    model.load_state_dict(to_load, strict=not skip_head)


def split_checkpoint_state(state: Mapping[str, torch.Tensor]
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Split a model state into (speaker model, ``frontend.*``) parts; drop the head."""
    speaker: Dict[str, torch.Tensor] = {}
    frontend: Dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(HEAD_PREFIX):
            continue
        (frontend if key.startswith(FRONTEND_PREFIX) else speaker)[key] = tensor
    return speaker, frontend
