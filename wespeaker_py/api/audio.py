"""Turning what a user passes (a path, an array, a tensor) into one mono waveform.

The result is float32 on the int16 scale the front-ends expect, at the
model's sample rate. The rules are the training pipeline's: the first channel
of a multi-channel input, soxr resampling from any rate. Arrays and tensors
are ``[samples]``, or ``[channels, samples]`` / ``[samples, channels]`` (the
shorter axis is taken for channels); float samples are read as [-1, 1] (as
soundfile and librosa give them), int16 samples as they are.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

from wespeaker_py.dataset.audio import INT16_SCALE, AudioError, open_audio
from wespeaker_py.dataset.chunk import read_whole
from wespeaker_py.dataset.resample import resample
from wespeaker_py.errors import AudioInputError

AudioLike = Union[str, "os.PathLike[str]", np.ndarray, Any]


def describe_audio(audio: AudioLike) -> str:
    """A short name of an input for messages: the path, or the array's shape."""
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    shape = getattr(audio, "shape", None)
    return f"<{type(audio).__name__} of shape {tuple(shape)}>" if shape is not None \
        else f"<{type(audio).__name__}>"


def _read_file(path: str, target_rate: int) -> np.ndarray:
    if os.path.isdir(path):
        raise AudioInputError(f"{path}: is a folder, not an audio file")
    try:
        with open_audio(path) as handle:
            return read_whole(handle, target_rate)
    except AudioError as error:
        detail = error.detail or error.reason
        raise AudioInputError(detail if path in detail else f"{path}: {detail}") from None


def _as_numpy(audio: Any) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        return audio
    if hasattr(audio, "detach") and hasattr(audio, "cpu"):   # a torch tensor
        return audio.detach().cpu().numpy()
    raise AudioInputError(f"cannot embed a {type(audio).__name__}: pass a file path, "
                          f"a NumPy array or a torch tensor")


def _mono_int16_scale(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.ndim == 2:
        channel_axis = 0 if samples.shape[0] <= samples.shape[1] else 1
        samples = np.take(samples, 0, axis=channel_axis)
    elif samples.ndim != 1:
        raise AudioInputError(f"{name}: expected [samples] or a two-axis "
                              f"[channels, samples] array")
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):
        raise AudioInputError(f"{name}: integer samples must be int16, got {samples.dtype}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioInputError(f"{name}: samples of type {samples.dtype} are not audio")
    return (samples.astype(np.float32) * np.float32(INT16_SCALE))


def load_waveform(audio: AudioLike, target_rate: int,
                  sample_rate: Optional[int] = None) -> np.ndarray:
    """Mono float32 samples (int16 scale) of ``audio`` at ``target_rate``.

    ``sample_rate`` is required for arrays and tensors and ignored for files
    (which carry theirs). Missing or unreadable files, non-audio, empty or
    non-finite audio raise :class:`~wespeaker_py.errors.AudioInputError` naming
    the input.
    """
    name = describe_audio(audio)
    if isinstance(audio, (str, os.PathLike)):
        wav = _read_file(os.fspath(audio), target_rate)
    else:
        if sample_rate is None:
            raise AudioInputError(f"{name}: give sample_rate= with an array or tensor")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
                or sample_rate <= 0:
            raise AudioInputError(f"{name}: sample_rate must be a positive integer, "
                                  f"got {sample_rate!r}")
        samples = _mono_int16_scale(_as_numpy(audio), name)
        if samples.size and np.isfinite(samples).all():
            samples = resample(np.ascontiguousarray(samples), float(sample_rate),
                               float(target_rate))
        wav = samples
    if wav.size == 0:
        raise AudioInputError(f"{name}: the audio is empty")
    if not np.isfinite(wav).all():
        raise AudioInputError(f"{name}: the audio contains NaN or infinite samples")
    return np.ascontiguousarray(wav, dtype=np.float32)
