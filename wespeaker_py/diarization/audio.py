"""Reading a recording for diarization: any rate, any channel count -> mono 16 kHz float.

Diarization works on whole recordings at one rate. Stereo (or more) is mixed down
by averaging the channels, because in a two-channel call each speaker may sit on
one channel and keeping only the first would lose the other. Samples are float32
in [-1, 1].
"""
from __future__ import annotations

import io
import subprocess

import numpy as np
import soundfile as sf

from wespeaker_py.dataset.resample import resample

SAMPLE_RATE = 16000


class AudioReadError(ValueError):
    """A recording could not be read or holds no samples; the message names the file."""


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``[frames]`` or ``[frames, channels]`` -> ``[frames]`` by averaging the channels."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ValueError(f"expected [frames] or [frames, channels] samples, got {samples.shape}")
    return samples.mean(axis=1, dtype=np.float32)


def prepare_waveform(samples: np.ndarray, sample_rate: int,
                     target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix to mono and resample to ``target_rate``; float32 in the caller's scale."""
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    mono = to_mono(np.asarray(samples, dtype=np.float32))
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
