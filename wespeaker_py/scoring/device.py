"""Choice of the torch device the scoring back-ends compute on."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` means the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device
