"""Choice of the torch device a job computes on (extraction, scoring, the Python API)."""
from __future__ import annotations

from typing import Optional, Union

import torch

from wespeaker_py.errors import WespeakerError


class DeviceUnavailableError(WespeakerError, RuntimeError):
    """A device asked for by name that this machine does not have."""


def resolve_device(name: Optional[Union[str, torch.device]] = "auto") -> torch.device:
    """``None`` or ``auto``: the first CUDA device when one is present, else the CPU.

    A CUDA device asked for by name on a machine without CUDA is an error.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {str(name)!r} requested but CUDA is not "
                                     f"available")
    return device
