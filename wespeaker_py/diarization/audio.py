"""Reading a recording for diarization: any rate, any channel count -> mono 16 kHz float.

Diarization works on whole recordings at one rate. Stereo (or more) is mixed down
by averaging the channels -- unlike embedding, which keeps the first channel as
training did -- because in a two-channel call each speaker may sit on one
channel and keeping only the first would lose the other. Samples are float32 in
[-1, 1].
"""
from __future__ import annotations

import io
import os
import subprocess
from typing import Any, Optional

import numpy as np
import soundfile as sf

from wespeaker_py.errors import AudioInputError

SAMPLE_RATE = 16000


class AudioReadError(AudioInputError):
    """A recording could not be read or holds no samples; the message names the file."""


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``[frames]``, ``[frames, channels]`` or ``[channels, frames]`` -> ``[frames]``.

    Of two axes the shorter one holds the channels; they are averaged.
    """
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise AudioInputError(f"expected [frames] or a two-axis array of channels and frames, "
                              f"got shape {samples.shape}")
    channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
    return samples.mean(axis=channel_axis, dtype=np.float32)


def prepare_waveform(samples: np.ndarray, sample_rate: int,
                     target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix to mono and resample to ``target_rate``; float32 in the caller's scale."""
    if sample_rate <= 0:
        raise AudioInputError(f"sample rate must be positive, got {sample_rate}")
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    mono = to_mono(samples.astype(np.float32, copy=False))
    if not np.isfinite(mono).all():
        raise AudioInputError("the audio contains NaN or infinite samples")
    if sample_rate == target_rate:
        return mono
    # imported here: the dataset package pulls in torch, which scoring and RTTM tools avoid
    from wespeaker_py.dataset.resample import resample
    return resample(mono, sample_rate, target_rate)


def _read_pipe(command: str) -> io.BytesIO:
    result = subprocess.run(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-200:]
        raise AudioReadError(f"'{command}' exited with {result.returncode}: {message}")
    return io.BytesIO(result.stdout)


def load_recording(path: str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a whole recording as mono float32 in [-1, 1] at ``target_rate``.

    ``path`` is a file or, as in a Kaldi ``wav.scp``, a command ending in ``|``
    that writes the audio to its standard output.
    """
    source = _read_pipe(path.rstrip()[:-1]) if path.rstrip().endswith("|") else path
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioReadError(f"{path}: cannot read audio: {err}") from None
    if samples.shape[0] == 0:
        raise AudioReadError(f"{path}: no audio samples")
    return prepare_waveform(samples, rate, target_rate)


def as_recording(audio: Any, sample_rate: Optional[int] = None,
                 target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A path, NumPy array or torch tensor -> mono float32 in [-1, 1] at ``target_rate``.

    Arrays and tensors need ``sample_rate``; float samples are taken as [-1, 1],
    int16 samples as they are stored.
    """
    if isinstance(audio, (str, os.PathLike)):
        return load_recording(os.fspath(audio), target_rate)
    if hasattr(audio, "detach") and hasattr(audio, "cpu"):  # a torch tensor
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise AudioInputError(f"cannot diarize a {type(audio).__name__}: pass a file path, "
                              f"a NumPy array or a torch tensor")
    if sample_rate is None:
        raise AudioInputError("give sample_rate= with an array or tensor")
    return prepare_waveform(audio, sample_rate, target_rate)
