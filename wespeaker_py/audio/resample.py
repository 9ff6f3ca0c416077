"""Sample-rate conversion (soxr, chosen by bench/bench_pipeline.py): the one resampler.

On the ratios the pipeline uses (speed 0.9/1.1, 8k->16k, 44.1k->16k) soxr "HQ"
took a half to a sixth of the time of ``scipy.signal.resample_poly`` with its
default filter while being far more accurate (72-133 dB passband SNR against
35-38 dB, better than 130 dB alias rejection); a resample_poly filter long enough
to come near soxr's rejection was 5-26 times slower than soxr.
Figures: bench/results_pipeline.md.
"""
from __future__ import annotations

import numpy as np
import soxr

QUALITY = "HQ"


def resample(samples: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    """Resample a mono float32 signal from ``in_rate`` to ``out_rate`` (any positive rates)."""
    if in_rate == out_rate:
        return samples
    out = soxr.resample(samples, in_rate, out_rate, quality=QUALITY)
    return np.asarray(out, dtype=np.float32)


def narrowband(samples: np.ndarray, heard_rate: int, rate: int) -> np.ndarray:
    """``samples`` at ``rate`` as they reach a model at ``rate`` after being heard at the
    lower ``heard_rate``: brought down to it and back (the same length)."""
    out = resample(resample(samples, float(rate), float(heard_rate)), float(heard_rate),
                   float(rate))
    if out.size >= samples.size:
        return out[:samples.size]
    return np.pad(out, (0, samples.size - out.size))


def heard_rate_of(source_rate: int, model_rate: int) -> int:
    """The rate audio that came at ``source_rate`` was heard at, for a model at
    ``model_rate``: ``source_rate`` when lower (its top band is empty), else 0 (full band)."""
    return int(source_rate) if 0 < source_rate < model_rate else 0
