"""Training checkpoints: atomic save and exact resume.

A training checkpoint (``exp_dir/models/model_<epoch>.pt``) is a dict::

    {"model": state_dict (head under "projection."), "optimizer": ..., "scheduler": ...,
     "margin_scheduler": ..., "grad_scaler": ... or None, "epoch": int,
     "rng": [per-rank RNG states (CUDA: the rank's own device's)],
     "param_digests": [per-rank parameter digests],
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
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError
from wespeaker_py.frontend.ssl import frontend_state_dict_for_checkpoint
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.utils.file_utils import atomic_path
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

_EPOCH_IN_NAME = re.compile(r"model_(\d+)\.pt$")


def capture_rng_state(device: torch.device) -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's CPU generators, and of the CUDA
    generator of ``device`` (this rank's training device; None when it is not CUDA)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Put back generator states captured by :func:`capture_rng_state`.

    The CUDA state goes to ``device``, this rank's training device, whichever index
    it has now. A checkpoint of older code holds a list, one state per GPU the rank
    could see, by position: the entry at ``device``'s index is taken; without one,
    a warning says the CUDA generator keeps its seeded state.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    cuda_state = state.get("cuda")
    if isinstance(cuda_state, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda_state = cuda_state[index] if index < len(cuda_state) else None
    if cuda_state is None:
        logger.warning("the checkpoint holds no CUDA generator state for %s: it keeps its "
                       "seeded state, so the run will not retrace an uninterrupted one", device)
        return
    torch.cuda.set_rng_state(cuda_state, device)


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's name, dtype, shape and bytes (buffers excluded).

    DDP keeps parameters identical on all ranks, but not BatchNorm statistics,
    which each rank updates from its own last batch.
    """
    return tensors_digest(model.named_parameters())


def tensors_digest(named: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of each named tensor's name, dtype, shape and bytes, in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_training_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler, margin_scheduler, epoch: int,
                             rng_states: List[Dict[str, Any]], param_digests: List[str],
                             grad_scaler: Optional[torch.amp.GradScaler] = None,
                             before_publish: Optional[Callable[[], None]] = None,
                             extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write everything needed to continue training after ``epoch``, atomically.

    ``rng_states`` and ``param_digests`` hold one :func:`capture_rng_state` and
    :func:`parameter_digest` result per rank. A frozen SSL front-end's WavLM
    weights are left out of ``"model"``. ``before_publish`` runs once the file
    is complete, just before it appears under ``path``. ``extra`` entries are
    added to the dict (``interrupted_at``).
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
        **(extra or {}),
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
                           world: DistContext,
                           grad_scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """Put back everything but the weights for an exact resume; return the checkpoint's epoch.

    Load the weights first (:func:`wespeaker_py.runtime.checkpoint.load_weights`
    without head truncation). The optimizer keeps this run's settings
    (:func:`load_optimizer_state`). Each rank takes back its own RNG state when
    the checkpoint was written by as many ranks; otherwise the generators keep
    their seeded state and a warning says the run will not retrace the original.
    """
    load_optimizer_state(optimizer, checkpoint["optimizer"], source)
    scheduler.load_state_dict(checkpoint["scheduler"])
    margin_scheduler.load_state_dict(checkpoint["margin_scheduler"])
    if grad_scaler is not None and checkpoint.get("grad_scaler") is not None:
        grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    rng_states = checkpoint.get("rng") or []
    if len(rng_states) == world.world_size:
        restore_rng_state(rng_states[world.rank], world.device)
    else:
        logger.warning("%s was written by %d ranks, this run has %d: random generators are "
                       "not restored, so the run will not retrace an uninterrupted one",
                       source, len(rng_states), world.world_size)
    return int(checkpoint["epoch"])


# group entries that the config does not set: the parameters, the rate that the
# schedule sets every step, and "capturable", which keep_optimizer_state_on_device
# sets for the device after the load
_NOT_FROM_CONFIG = ("params", "lr", "capturable")
# where a group entry comes from when it is not optimizer_args
_GROUP_ENTRY_KEYS = {"lr_scale": "dataset_args.s3prl_args.lr_scale"}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                         source: str) -> None:
    """Load a checkpoint's optimizer state under the settings ``optimizer`` was built with.

    Its per-parameter state (momentum buffers, Adam's moments and step counts)
    is taken as saved; each parameter group keeps this run's entries
    (``optimizer_args``, ``lr_scale``) but ``params`` and ``lr`` (which the
    learning-rate schedule sets each step). A warning names each entry that the
    checkpoint had otherwise. Parameter groups of other sizes (another
    ``frozen_params``, or a front-end frozen or not) are a ConfigError.
    """
    saved_sizes = [len(group["params"]) for group in state["param_groups"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise ConfigError(
            f"{source} cannot resume this run: its optimizer trains parameter groups of "
            f"{saved_sizes} tensors, this run's {sizes}; the trained parameters changed "
            f"(config keys 'frozen_params', 'dataset_args.s3prl_args.frozen'). Resume "
            f"with the checkpoint's settings, or start from its weights with "
            f"'model_init' in place of 'checkpoint'")
    planned = [{key: value for key, value in group.items() if key not in ("params", "lr")}
               for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    changed: Dict[str, str] = {}
    for group, settings in zip(optimizer.param_groups, planned):
        for key, value in settings.items():
            if key not in _NOT_FROM_CONFIG and group.get(key) != value:
                name = _GROUP_ENTRY_KEYS.get(key, f"optimizer_args.{key}")
                changed.setdefault(name, f"{name}: checkpoint {group.get(key)!r}, "
                                         f"config {value!r}")
        group.update(settings)
    if changed:
        logger.warning("%s: the optimizer continues with this run's settings, not the "
                       "checkpoint's: %s", source, "; ".join(changed.values()))
