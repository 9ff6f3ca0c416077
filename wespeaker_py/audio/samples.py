"""The sample convention, the channel policy, and the checks every caller shares.

Samples given to a model are mono float32 on the int16 scale (a full-scale
sine peaks at 32768, as Kaldi and WeSpeaker feed fbank): float audio in [-1, 1]
is multiplied by :data:`INT16_SCALE`, int16 audio is taken as it is. The
channel policy is the training pipeline's: the first channel of a
multi-channel input.
"""
from __future__ import annotations

import logging
from typing import Set, Tuple

import numpy as np

from wespeaker_py.audio.errors import (AudioEmptyError, AudioInputError, AudioNonFiniteError,
                                       AudioSilentError, AudioTooShortError)

logger = logging.getLogger(__name__)

# float audio in [-1, 1] times this is the int16 scale models see; divide to go back
INT16_SCALE = 32768.0
# a model built for at least WIDEBAND_RATE given audio at NARROWBAND_RATE or lower is
# warned about: the upper half of its spectrum is empty and embeddings degrade
WIDEBAND_RATE = 16000
NARROWBAND_RATE = 8000

_rates_warned: Set[Tuple[int, int]] = set()


def mix_to_mono(frames: np.ndarray) -> np.ndarray:
    """The channel policy, in one place: ``[frames, channels]`` -> ``[frames]``, the
    first channel (contiguous). File reads and arrays both go through it."""
    return np.ascontiguousarray(frames[:, 0])


def first_channel(samples: np.ndarray, name: str) -> np.ndarray:
    """``[samples]`` as it is; a two-axis array (the shorter axis holds the channels)
    through :func:`mix_to_mono`."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioInputError(f"{name}: expected [samples] or a two-axis "
                              f"[channels, samples] array, got shape {samples.shape}")
    return mix_to_mono(samples.T if samples.shape[0] <= samples.shape[1] else samples)


def to_int16_scale(samples: np.ndarray, name: str) -> np.ndarray:
    """float32 samples on the int16 scale: floats are read as [-1, 1], int16 as stored."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):
        raise AudioInputError(f"{name}: integer samples must be int16, got {samples.dtype}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioInputError(f"{name}: samples of type {samples.dtype} are not audio")
    return samples.astype(np.float32) * np.float32(INT16_SCALE)


def check_samples(samples: np.ndarray, name: str, min_samples: int = 1) -> np.ndarray:
    """Return ``samples``, or raise the named error saying why no model should see them.

    In order: no samples (:class:`AudioEmptyError`), fewer than ``min_samples``
    (:class:`AudioTooShortError`), NaN or infinite samples
    (:class:`AudioNonFiniteError`), every sample zero (:class:`AudioSilentError`).
    """
    if samples.size == 0:
        raise AudioEmptyError(f"{name}: the audio is empty")
    if samples.size < min_samples:
        raise AudioTooShortError(f"{name}: {samples.size} samples, fewer than the "
                                 f"{min_samples} needed")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise AudioNonFiniteError(f"{name}: the audio contains NaN or infinite samples "
                                  f"({bad} of {samples.size})")
    if not samples.any():
        raise AudioSilentError(f"{name} is silent: all {samples.size} samples are zero")
    return samples


def warn_if_narrowband(rate: int, target_rate: int, name: str) -> None:
    """Log a warning, once per process and pair of rates, when audio at
    :data:`NARROWBAND_RATE` or lower goes to a model built for :data:`WIDEBAND_RATE`
    or more (upsampling cannot restore the missing band)."""
    if rate > NARROWBAND_RATE or target_rate < WIDEBAND_RATE:
        return
    if (rate, target_rate) in _rates_warned:
        return
    _rates_warned.add((rate, target_rate))
    logger.warning("%s is %d Hz audio for a model built for %d Hz: it is upsampled, but the "
                   "band above %d Hz stays empty and embeddings may be less accurate "
                   "(warned once)", name, rate, target_rate, rate // 2)
