"""Deterministic weights and inputs for the ReDimNet / TFMel reference checks.

The stored reference outputs (tests/data/redimnet_reference.npz) were made by
running WeSpeaker's own implementation with weights from :func:`fill_weights`
(a function of the state_dict's key order and shapes only, so WeSpeaker's
model and ours, which share keys, get the same numbers) on :func:`waveform`.
"""
import os

import numpy as np
import torch

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "redimnet_reference.npz")
# (model, frames of the feature input); the TFMel chain runs ReDimNet2B0 on the waveform.
MODEL_CASES = (("ReDimNetB0", 120), ("ReDimNetB2", 120), ("ReDimNetB3", 96),
               ("ReDimNet2B0", 120), ("ReDimNet2B2", 120), ("ReDimNet2B6", 64))
FEAT_DIM = 72


def fill_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every float tensor of ``model``'s state with seeded, well-scaled values.

    BatchNorm running variances are positive; other 1-D ``weight`` tensors
    (norm scales) sit around 1; matrices and kernels are scaled by their fan-in.
    """
    state = model.state_dict()
    with torch.no_grad():
        for index, (key, tensor) in enumerate(state.items()):
            if not tensor.is_floating_point():
                continue
            generator = torch.Generator().manual_seed(seed * 100003 + index)
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if key.endswith("running_var"):
                value = 0.5 + noise.abs()
            elif tensor.dim() >= 2 and not key.endswith(".w") and "inputs_weights" not in key:
                value = noise / max(1, tensor[0].numel()) ** 0.5
            elif key.endswith(".weight"):
                value = 1.0 + 0.1 * noise
            else:  # biases, running means, stage-mixing logits
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))


def features(frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """``[batch, frames, 72]`` seeded features (frames first)."""
    return torch.randn(batch, frames, FEAT_DIM, generator=torch.Generator().manual_seed(seed))


def waveform(batch: int = 2, samples: int = 16000 + 123, seed: int = 2) -> torch.Tensor:
    """``[batch, samples]`` int16-scale test signal: tones plus noise, integer valued."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float64) / 16000
    tones = torch.stack([torch.sin(2 * np.pi * f * t) for f in (220.0, 1375.0)])
    noise = torch.randn(batch, samples, generator=generator, dtype=torch.float64)
    return torch.round(6000 * tones[:batch] + 800 * noise).float()
