"""The one reader of files written with ``torch.save``: checkpoints, calibration models,
pretrained front-end weights. A file that is no such thing is refused in one line naming
it and what was expected, never with torch's traceback (or its essay on ``weights_only``).
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, Mapping

import torch

from wespeaker_py.errors import ModelSourceError, WespeakerError, first_line

# torch.load's warnings when it hands a TorchScript archive to torch.jit.load
_TORCHSCRIPT_WARNINGS = (
    ("'torch.load' received a zip file that looks like a TorchScript archive", UserWarning),
    ("`torch.jit.load` is deprecated", DeprecationWarning))


class CheckpointFileNotFound(WespeakerError, FileNotFoundError):
    """A checkpoint path that names no file."""


def _load(path: str, lazy: bool, weights_only: bool) -> Any:
    if lazy:
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except (RuntimeError, TypeError):   # not the zip format (torch < 1.6's), or a torch
            pass                              # without mmap (< 2.1): read it whole
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _why_not_loaded(error: Exception) -> str:
    """torch's reason for refusing a file, in one line. A refusal of ``weights_only`` opens
    with an essay on the option; its reason is the part after "WeightsUnpickler error"."""
    refused = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    if refused is None:
        return f"{type(error).__name__}: {first_line(error, sentence=True)}"
    found = re.match(r"Unsupported global: GLOBAL (\S+)", refused.group(1))
    if found is not None:
        return (f"it holds Python objects ({found.group(1)}) besides tensors and plain "
                f"values, which are not unpickled")
    return f"{type(error).__name__}: {refused.group(1).strip()}"


def read_checkpoint(path: str, lazy: bool = False, weights_only: bool = False,
                    what: str = "a PyTorch checkpoint") -> Dict[str, Any]:
    """Load a checkpoint file on the CPU; ``lazy``: its tensors mapped from the file, not
    read (to look at its keys), where torch can map it (a file saved in torch's zip format);
    ``weights_only``: unpickle nothing but tensors and plain values. ``what`` is the kind of
    file expected, as the messages name it ("a calibration model").

    Raises:
        CheckpointFileNotFound: nothing at ``path``.
        ModelSourceError: ``path`` is a directory, or the file is not a PyTorch checkpoint
            (truncated, another format, a TorchScript model, a pickle of something else
            than a dict, Python objects where ``weights_only``); the one-line message
            names it and ``what``, and torch's warnings about a TorchScript file are not
            shown.
    """
    if os.path.isdir(path):
        raise ModelSourceError(f"{path}: not {what} (it is a directory)")
    if not os.path.isfile(path):
        raise CheckpointFileNotFound(f"{path} does not exist ({what} was expected)")
    try:
        with warnings.catch_warnings():
            # a TorchScript file (bin.export_jit's final.zip) is refused below in one line
            for message, category in _TORCHSCRIPT_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            loaded = _load(path, lazy, weights_only)
    except Exception as error:  # torch.load raises many types for a file that is no checkpoint
        raise ModelSourceError(f"{path}: not {what} ({_why_not_loaded(error)})") from None
    if isinstance(loaded, torch.jit.ScriptModule):
        raise ModelSourceError(f"{path}: not {what} (it is a TorchScript model, as "
                               f"bin.export_jit writes; give the checkpoint it was exported "
                               f"from, e.g. models/avg_model.pt)")
    if not isinstance(loaded, Mapping):
        raise ModelSourceError(f"{path}: not {what} (it holds a "
                               f"{type(loaded).__name__}, not a dict of tensors)")
    return loaded
