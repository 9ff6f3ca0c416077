"""Batched speed resampling in torch (polyphase windowed sinc), for the training device.

Speed ``s`` turns ``ceil(L * s) + 1`` samples read from a file at the target rate
into ``L`` output samples, output ``n`` lying at input time ``n * s`` with zeros
assumed outside the read span, which is how the CPU path's soxr call treats it.
For a rational ``s = down / up`` the output splits into ``up`` phases, each a
fixed filter over the input at stride ``down``: one ``conv1d`` with ``up``
output channels and stride ``down`` computes a whole group of equal-speed rows.

The filter is a Kaiser-windowed sinc whose cut-off, length and window were
chosen to come close to soxr "HQ" (the CPU path): see bench/results_pipeline.md
for the measured difference (about 44 dB SNR on white noise, where the two
transition bands differ most, and over 80 dB on speech-band signals).
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

# Sinc lobes on each side, cut-off as a fraction of the lower Nyquist rate, Kaiser beta.
ZERO_CROSSINGS = 64
ROLLOFF = 0.958
KAISER_BETA = 6.0


@lru_cache(maxsize=16)
def polyphase_filters(speed: Fraction) -> Tuple[np.ndarray, int]:
    """Filters ``[up, 1, K]`` for speed ``down/up`` and the left padding they assume."""
    ratio = 1 / Fraction(speed)  # output samples per input sample
    up, down = ratio.numerator, ratio.denominator
    cutoff = min(1.0, up / down) * ROLLOFF
    half_width = ZERO_CROSSINGS / cutoff  # in input samples
    pad = int(math.ceil(half_width))
    offsets = [(phase * down) // up for phase in range(up)]
    taps = max(offsets) + 2 * pad + 2
    filters = np.zeros((up, 1, taps), dtype=np.float64)
    positions = np.arange(taps)
    for phase in range(up):
        frac = phase * down / up - offsets[phase]
        distance = frac - (positions - pad - offsets[phase])  # output time minus input time
        inside = np.abs(distance) <= half_width
        window = np.i0(KAISER_BETA * np.sqrt(np.clip(1.0 - (distance / half_width) ** 2,
                                                     0.0, None)))
        response = cutoff * np.sinc(cutoff * distance) * window / np.i0(KAISER_BETA)
        filters[phase, 0] = np.where(inside, response, 0.0)
    return filters.astype(np.float32), pad


@lru_cache(maxsize=32)
def _filters_on(speed: Fraction, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The filters, copied to ``device`` once (no host-to-device copy per batch)."""
    return torch.from_numpy(polyphase_filters(speed)[0]).to(device=device, dtype=dtype)


def speed_resample(wavs: torch.Tensor, speed: Fraction, out_len: int) -> torch.Tensor:
    """Resample rows ``[N, S]`` played at ``speed`` to ``[N, out_len]`` (same device and dtype).

    ``S`` must be at least ``ceil(out_len * speed)``; longer rows are fine (the
    extra samples are used as the CPU path would use them).
    """
    speed = Fraction(speed)
    if speed == 1:
        return wavs[:, :out_len]
    pad = polyphase_filters(speed)[1]
    weight = _filters_on(speed, wavs.device, wavs.dtype)
    up, _, taps = weight.shape
    down = (1 / speed).denominator
    groups = -(-out_len // up)
    needed = (groups - 1) * down + taps
    padded = F.pad(wavs.unsqueeze(1), (pad, max(0, needed - pad - wavs.shape[-1])))
    phases = F.conv1d(padded, weight, stride=down)  # [N, up, groups]
    return phases.transpose(1, 2).reshape(wavs.shape[0], -1)[:, :out_len]
