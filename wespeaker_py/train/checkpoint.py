"""Training checkpoints: atomic save and exact resume.

A training checkpoint (``exp_dir/models/model_<epoch>.pt``) is a dict::

    {"model": state_dict (head under "projection."), "optimizer": ..., "scheduler": ...,
     "margin_scheduler": ..., "grad_scaler": ... or None, "epoch": int,
     "rng": [per-rank RNG states], "param_digests": [per-rank parameter digests],
     "world_size": int}

Reading checkpoints and loading weights (a bare state_dict such as WeSpeaker's
``avg_model.pt`` included) live in :mod:`wespeaker_py.runtime.checkpoint`,
shared with extraction, export and the Python API.

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

from wespeaker_py.frontend.ssl import frontend_state_dict_for_checkpoint
from wespeaker_py.utils.file_utils import atomic_path
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

_EPOCH_IN_NAME = re.compile(r"model_(\d+)\.pt$")


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


def is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """True for the full training state this module writes, False for a bare state_dict."""
    return isinstance(checkpoint.get("model"), Mapping) and "optimizer" in checkpoint


def epoch_from_name(path: str) -> Optional[int]:
    """The epoch in a ``model_<epoch>.pt`` file name, or None for another name."""
    match = _EPOCH_IN_NAME.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def restore_training_state(checkpoint: Mapping[str, Any], source: str,
                           optimizer: torch.optim.Optimizer, scheduler, margin_scheduler,
                           rank: int, world_size: int,
                           grad_scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """Put back everything but the weights for an exact resume; return the checkpoint's epoch.

    Load the weights first (:func:`wespeaker_py.runtime.checkpoint.load_weights`
    without head truncation). Each
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
