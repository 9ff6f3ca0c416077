"""Training checkpoints: atomic save and exact resume.

A training checkpoint (``exp_dir/models/model_<epoch>.pt``) is a dict::

    {"model": state_dict (head under "projection."), "optimizer": ..., "scheduler": ...,
     "margin_scheduler": ..., "grad_scaler": ... or None, "epoch": int,
     "rng": [per-rank RNG states (CUDA: the rank's own device's)],
     "param_digests": [per-rank parameter digests],
     "world_size": int,
     "run_settings": the config the run trained with, flattened (what a run continuing it
                     must share; see wespeaker_py.train.interrupt.training_settings),
     "spk2id_digest": speaker_map_digest of its speaker -> class id mapping}

The last two (absent from checkpoints of older code) are compared when a run continues the
checkpoint (:func:`wespeaker_py.train.interrupt.continued_settings`).

The optimizer's parameter groups name their parameters (``param_names``), so that
a run training other parameters can carry each one's state over by name
(:func:`load_optimizer_state`).

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
import json
import os
import random
import re
from collections import Counter
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

import numpy as np
import torch
import torch.nn as nn

from wespeaker_py.frontend.ssl import frontend_state_dict_for_checkpoint
from wespeaker_py.train.distributed import DistContext
from wespeaker_py.utils.atomic_files import save_torch
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# the name of the checkpoint the trainer writes after each epoch
_EPOCH_IN_NAME = re.compile(r"model_(\d+)\.pt")
# the entries of a training checkpoint that record the run that wrote it
RUN_SETTINGS = "run_settings"
SPK2ID_DIGEST = "spk2id_digest"


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


def speaker_map_digest(spk2id: Mapping[str, int]) -> str:
    """SHA-256 of a speaker -> class id mapping (the same mapping, the same digest)."""
    return hashlib.sha256(json.dumps(sorted(spk2id.items())).encode()).hexdigest()


def save_training_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler, margin_scheduler, epoch: int,
                             rng_states: List[Dict[str, Any]], param_digests: List[str],
                             run_settings: Mapping[str, Any], spk2id_digest: str,
                             grad_scaler: Optional[torch.amp.GradScaler] = None,
                             before_publish: Optional[Callable[[], None]] = None,
                             extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write everything needed to continue training after ``epoch``, atomically.

    ``rng_states`` and ``param_digests`` hold one :func:`capture_rng_state` and
    :func:`parameter_digest` result per rank; ``run_settings`` and ``spk2id_digest``
    record the run (see the module's docstring). A frozen SSL front-end's WavLM
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
        RUN_SETTINGS: dict(run_settings),
        SPK2ID_DIGEST: spk2id_digest,
        **(extra or {}),
    }
    save_torch(state, path, before_publish)


def is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """True for the full training state this module writes, False for a bare state_dict."""
    return isinstance(checkpoint.get("model"), Mapping) and "optimizer" in checkpoint


def checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint written after ``epoch``: ``model_<epoch>.pt``
    (WeSpeaker's; :func:`epoch_from_name` reads it back)."""
    return f"model_{epoch}.pt"


def epoch_from_name(path: str) -> Optional[int]:
    """The epoch of a file named ``model_<epoch>.pt`` (``path``'s last part), or None for
    another name (``avg_model.pt``, ``best_model_3.pt``)."""
    match = _EPOCH_IN_NAME.fullmatch(os.path.basename(path))
    return int(match.group(1)) if match else None


def restore_training_state(checkpoint: Mapping[str, Any], source: str,
                           optimizer: torch.optim.Optimizer, scheduler, margin_scheduler,
                           world: DistContext, trained_keys: Sequence[str],
                           grad_scaler: Optional[torch.amp.GradScaler] = None) -> int:
    """Put back everything but the weights for an exact resume; return the checkpoint's epoch.

    Load the weights first (:func:`wespeaker_py.runtime.checkpoint.load_weights`
    without head truncation). The optimizer keeps this run's settings and follows
    the parameters it trains (:func:`load_optimizer_state`; ``trained_keys``: the
    config keys that decide them). Each rank takes back its own RNG state when
    the checkpoint was written by as many ranks; otherwise the generators keep
    their seeded state and a warning says the run will not retrace the original.
    """
    epoch = int(checkpoint["epoch"])
    load_optimizer_state(optimizer, checkpoint["optimizer"], source, epoch + 1, trained_keys)
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
    return epoch


# group entries that the config does not set: the parameters and their names, the rate that
# the schedule sets every step, and "capturable", which keep_optimizer_state_on_device sets
# for the device after the load
_NOT_FROM_CONFIG = ("params", "param_names", "lr", "capturable")
# where a group entry comes from when it is not optimizer_args
_GROUP_ENTRY_KEYS = {"lr_scale": "dataset_args.s3prl_args.lr_scale"}
# name prefixes listed by a warning about parameters that start or stop training
_LISTED_PREFIXES = 6


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                         source: str, first_epoch: int, trained_keys: Sequence[str]) -> None:
    """Load a checkpoint's optimizer state under the settings ``optimizer`` was built with.

    ``optimizer``'s groups name their parameters (``param_names``, see
    :func:`~wespeaker_py.train.builder.build_optimizer`). Per-parameter state
    (momentum buffers, Adam's moments and step counts) is taken as saved; each
    parameter group keeps this run's entries (``optimizer_args``, ``lr_scale``) but
    ``lr`` (which the learning-rate schedule sets each step). A warning names each
    entry that the checkpoint had otherwise.

    When this run, which trains on from ``first_epoch``, trains other parameters
    than the checkpoint's (one of ``trained_keys`` changed, e.g. ``frozen_params``
    or a front-end's ``frozen``), the state follows each parameter by name: one
    that trained before keeps its state, one that starts training starts without,
    and the state of one that no longer trains is dropped; a warning names them.
    A checkpoint of older code names no parameters: its state loads as it is
    where the groups have the same sizes, else the optimizer starts empty (as
    WeSpeaker's does after its ``--checkpoint``), with a warning.
    """
    saved_names = [group.get("param_names") for group in state["param_groups"]]
    names = [group["param_names"] for group in optimizer.param_groups]
    sizes = [len(group) for group in names]
    saved_sizes = [len(group["params"]) for group in state["param_groups"]]
    if saved_names == names or (None in saved_names and saved_sizes == sizes):
        _load_same_parameters(optimizer, state, source)
    elif None in saved_names:
        logger.warning(
            "%s names no parameters in its optimizer state (older code) and trained parameter "
            "groups of %s tensors, this run's %s: the trained parameters changed (config keys "
            "%s), so the optimizer starts without state (momentum, Adam's moments)", source,
            saved_sizes, sizes, ", ".join(repr(key) for key in trained_keys))
    else:
        _follow_parameters_by_name(optimizer, state, source, first_epoch, trained_keys)


def _load_same_parameters(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                          source: str) -> None:
    """Load a state saved for the same parameters in the same groups, keeping our settings."""
    planned = [{key: value for key, value in group.items() if key not in ("params", "lr")}
               for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    _warn_changed_settings(source, zip(optimizer.param_groups, planned))
    for group, settings in zip(optimizer.param_groups, planned):
        group.update(settings)


def _follow_parameters_by_name(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                               source: str, first_epoch: int,
                               trained_keys: Sequence[str]) -> None:
    """Load each named parameter's saved state into this run's groups, which train others."""
    saved: Dict[str, Tuple[Mapping[str, Any], Any]] = {}  # name: (its group, its state)
    for group in state["param_groups"]:
        for index, name in zip(group["params"], group["param_names"]):
            saved[name] = (group, state["state"].get(index))
    current = optimizer.state_dict()
    carried: Dict[int, Any] = {}
    paired: Dict[Tuple[int, int], Tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    started: List[str] = []
    for group in current["param_groups"]:
        for index, name in zip(group["params"], group["param_names"]):
            if name not in saved:
                started.append(name)
                continue
            saved_group, entry = saved[name]
            paired[id(saved_group), id(group)] = (saved_group, group)
            if entry is not None:
                carried[index] = entry
    optimizer.load_state_dict({"state": carried, "param_groups": current["param_groups"]})
    _warn_changed_settings(source, paired.values())
    trained = {name for group in current["param_groups"] for name in group["param_names"]}
    stopped = [name for name in saved if name not in trained]
    if not started and not stopped:
        return   # the same parameters, grouped otherwise
    changes = ([f"{_describe(started)} from epoch {first_epoch} on, with empty optimizer "
                f"state"] if started else [])
    if stopped:
        changes.append(f"{_describe(stopped, 'no longer trains', 'no longer train')}, its "
                       f"optimizer state dropped")
    logger.warning("%s: this run trains other parameters than the checkpoint's (config keys "
                   "%s): %s; the other %d keep their optimizer state", source,
                   ", ".join(repr(key) for key in trained_keys), "; ".join(changes),
                   len(trained) - len(started))


def _warn_changed_settings(source: str,
                           pairs: Iterable[Tuple[Mapping[str, Any], Mapping[str, Any]]]) -> None:
    """Warn once for each group entry that differs between the checkpoint's group and this
    run's (``pairs`` of the two)."""
    changed: Dict[str, str] = {}
    for saved, settings in pairs:
        for key, value in settings.items():
            if key not in _NOT_FROM_CONFIG and saved.get(key) != value:
                name = _GROUP_ENTRY_KEYS.get(key, f"optimizer_args.{key}")
                changed.setdefault(name, f"{name}: checkpoint {saved.get(key)!r}, "
                                         f"config {value!r}")
    if changed:
        logger.warning("%s: the optimizer continues with this run's settings, not the "
                       "checkpoint's: %s", source, "; ".join(changed.values()))


def _describe(names: Sequence[str], one: str = "trains", more: str = "train") -> str:
    """``names`` counted by their first two name parts, and the verb for as many:
    '69 parameters of frontend.upstream.* train', '1 parameter of projection.weight trains'."""
    counts = Counter(_name_prefix(name) for name in names)
    total = f"{len(names)} parameter{'' if len(names) == 1 else 's'}"
    listed = [f"{count} of {prefix}" for prefix, count in counts.items()]
    if len(listed) > _LISTED_PREFIXES:
        listed = listed[:_LISTED_PREFIXES] + ["..."]
    what = (f"{total} of {next(iter(counts))}" if len(counts) == 1
            else f"{total} ({', '.join(listed)})")
    return f"{what} {one if len(names) == 1 else more}"


def _name_prefix(name: str) -> str:
    parts = name.split(".")
    return name if len(parts) <= 2 else ".".join(parts[:2]) + ".*"


def checkpoints_by_epoch(model_dir: str) -> List[str]:
    """The ``model_<epoch>.pt`` file names in ``model_dir`` by epoch, the earliest first
    (``model_2.pt`` before ``model_10.pt``); none when ``model_dir`` is no folder."""
    if not os.path.isdir(model_dir):
        return []
    names = [name for name in os.listdir(model_dir) if epoch_from_name(name) is not None]
    return sorted(names, key=lambda name: (epoch_from_name(name), name))
