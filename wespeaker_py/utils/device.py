"""Choice of the torch device a job computes on (extraction, scoring, the Python API)."""
from __future__ import annotations

from typing import Optional, Union

import torch

from wespeaker_py.errors import WespeakerError


class DeviceUnavailableError(WespeakerError, RuntimeError):
    """A device asked for by name that this machine does not have."""


def parse_device(name: Optional[Union[str, torch.device]]) -> Optional[torch.device]:
    """``name`` as a ``torch.device`` (None for None or ``auto``), without asking whether
    this machine has it; a name torch does not know (``gpu``) is a
    :class:`DeviceUnavailableError` naming it."""
    if name is None or name == "auto":
        return None
    try:
        return torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceUnavailableError(f"device={str(name)!r} (--device) is not a device: give "
                                     f"auto, cpu, cuda or cuda:N") from None


def resolve_device(name: Optional[Union[str, torch.device]] = "auto") -> torch.device:
    """``None`` or ``auto``: the first CUDA device when one is present, else the CPU.

    A name that is not a device (:func:`parse_device`), a CUDA device on a machine
    without CUDA, or a ``cuda:N`` beyond this machine's GPUs is an error.
    """
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {str(name)!r} requested but CUDA is not "
                                     f"available")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device {str(name)!r} requested but this machine has "
                                     f"{torch.cuda.device_count()} GPU(s) (cuda:0 to "
                                     f"cuda:{torch.cuda.device_count() - 1})")
    return device
