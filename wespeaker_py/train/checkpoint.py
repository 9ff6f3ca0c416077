"""Training checkpoints: atomic save, exact resume, and weight loading with the LM head rule.

A training checkpoint (``exp_dir/models/model_<epoch>.pt``) is a dict::

    {"model": state_dict (head under "projection."), "optimizer": ..., "scheduler": ...,
     "margin_scheduler": ..., "grad_scaler": ... or None, "epoch": int,
     "rng": [per-rank RNG states], "param_digests": [per-rank parameter digests],
     "world_size": int}

A bare state_dict (WeSpeaker's checkpoints, ``avg_model.pt``) is accepted
wherever weights are loaded.

A model trained on an SSL front-end holds it under ``frontend.``. When that
front-end is frozen its WavLM weights (``frontend.upstream.*``) never change,
so checkpoints leave them out; loading such a checkpoint takes them from the
model, which read them from the pretrained path when it was built.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.frontend.ssl import (frontend_state_dict_for_checkpoint,
                                       with_pretrained_frontend_weights)
from wespeaker_py.utils.file_utils import atomic_path
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

HEAD_PREFIX = "projection."
_EPOCH_IN_NAME = re.compile(r"model_(\d+)\.pt$")


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model; the message names the tensor."""


def capture_rng_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's, torch's CPU and every CUDA generator."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back generator states captured by :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's name, dtype, shape and bytes (buffers excluded).

    DDP keeps parameters identical on all ranks, but not BatchNorm statistics,
    which each rank updates from its own last batch.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_training_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler, margin_scheduler, epoch: int,
                             rng_states: List[Dict[str, Any]], param_digests: List[str],
                             grad_scaler: Optional[torch.amp.GradScaler] = None,
                             before_publish: Optional[Callable[[], None]] = None) -> None:
    """Write everything needed to continue training after ``epoch``, atomically.

    ``rng_states`` and ``param_digests`` hold one :func:`capture_rng_state` and
    :func:`parameter_digest` result per rank. A frozen SSL front-end's WavLM
    weights are left out of ``"model"``. ``before_publish`` runs once the file
    is complete, just before it appears under ``path``.
    """
    state = {
        "model": frontend_state_dict_for_checkpoint(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "margin_scheduler": margin_scheduler.state_dict(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "epoch": epoch,
        "rng": rng_states,
        "param_digests": param_digests,
        "world_size": len(rng_states),
    }
    with atomic_path(path) as tmp_path:
        # through a file object, so that a full disk reports ENOSPC with the path
        with open(tmp_path, "wb") as handle:
            torch.save(state, handle)
        if before_publish is not None:
            before_publish()


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint file on the CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """True for the full training state this module writes, False for a bare state_dict."""
    return isinstance(checkpoint.get("model"), Mapping) and "optimizer" in checkpoint


def model_state_of(checkpoint: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The model state_dict inside any supported checkpoint layout."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def epoch_from_name(path: str) -> Optional[int]:
    """The epoch in a ``model_<epoch>.pt`` file name, or None for another name."""
    match = _EPOCH_IN_NAME.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                 allow_head_truncation: bool = True, allow_missing_head: bool = False) -> None:
    """Copy ``state`` into ``model``, refusing any mismatch except the LM head rule.

    The LM rule: a head tensor (``projection.*``) whose checkpoint version has
    more rows than the model's, and the same size otherwise, loads its first
    rows (a head trained with speed-perturbed speakers as extra classes
    feeding a head without them). ``allow_missing_head`` lets a checkpoint
    without any head tensor initialise only the speaker model. A checkpoint
    without any of the model's SSL front-end WavLM weights (a frozen run's)
    keeps the model's own, pretrained ones. Every other missing, unexpected or
    differently shaped tensor raises :class:`CheckpointMismatchError` naming it
    and ``source``.
    """
    try:
        state = with_pretrained_frontend_weights(model, state, source)
    except ValueError as err:
        raise CheckpointMismatchError(str(err)) from None
    own = model.state_dict()
    to_load: Dict[str, torch.Tensor] = {}
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise CheckpointMismatchError(
            f"{source}: tensor '{unexpected[0]}' is not in the model "
            f"({len(unexpected)} unexpected tensors)")
    skip_head = allow_missing_head and not any(key.startswith(HEAD_PREFIX) for key in state)
    for key, target in own.items():
        if key not in state:
            if skip_head and key.startswith(HEAD_PREFIX):
                continue
            raise CheckpointMismatchError(f"{source}: tensor '{key}' is missing")
        tensor = state[key]
        if tensor.shape != target.shape:
            fits_lm_rule = (allow_head_truncation and key.startswith(HEAD_PREFIX)
                            and tensor.dim() >= 1 and tensor.shape[1:] == target.shape[1:]
                            and tensor.shape[0] > target.shape[0])
            if not fits_lm_rule:
                raise CheckpointMismatchError(
                    f"{source}: tensor '{key}' has shape {tuple(tensor.shape)} in the "
                    f"checkpoint but {tuple(target.shape)} in the model")
            logger.info("%s: loading the first %d of %d rows of %s", source,
                        target.shape[0], tensor.shape[0], key)
            tensor = tensor[:target.shape[0]]
        to_load[key] = tensor
    model.load_state_dict(to_load, strict=not skip_head)


def load_model_init(model: nn.Module, path: str) -> None:
    """Initialise ``model`` from any checkpoint at ``path`` with the LM head rule.

    A checkpoint without a head initialises the speaker model only.
    """
    checkpoint = read_checkpoint(path)
    load_weights(model, model_state_of(checkpoint), path, allow_head_truncation=True,
                 allow_missing_head=True)


def restore_training_state(checkpoint: Mapping[str, Any], source: str,
                           optimizer: torch.optim.Optimizer, scheduler, margin_scheduler,
                           rank: int, world_size: int,
                           grad_scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """Put back everything but the weights for an exact resume; return the checkpoint's epoch.

    Load the weights first (:func:`load_weights` without head truncation). Each
    rank takes back its own RNG state when the checkpoint was written by as
    many ranks; otherwise the generators keep their seeded state and a warning
    says the run will not retrace the original.
    """
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    margin_scheduler.load_state_dict(checkpoint["margin_scheduler"])
    if grad_scaler is not None and checkpoint.get("grad_scaler") is not None:
        grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    rng_states = checkpoint.get("rng") or []
    if len(rng_states) == world_size:
        restore_rng_state(rng_states[rank])
    else:
        logger.warning("%s was written by %d ranks, this run has %d: random generators are "
                       "not restored, so the run will not retrace an uninterrupted one",
                       source, len(rng_states), world_size)
    return int(checkpoint["epoch"])
