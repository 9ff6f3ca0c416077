"""Opening audio files, Kaldi pipes and in-memory bytes, and reading frames from them.

An :class:`AudioHandle` gives the header facts (frames, sample rate, channels)
without decoding, and ``read(start, count)`` decodes only the frames asked for
(soundfile seeks in WAV and FLAC files and in-memory tar members alike), so
the training pipeline reads only its chunk. Samples come back as the first
channel, float32 on the int16 scale (:data:`~wespeaker_py.audio.samples.INT16_SCALE`).
"""
from __future__ import annotations

import io
import os
import subprocess
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from wespeaker_py.audio.errors import (AudioEmptyError, AudioMissingError, AudioPipeError,
                                       AudioTruncatedError, AudioUnreadableError)
from wespeaker_py.audio.samples import INT16_SCALE, mix_to_mono

def is_pipe(wav: str) -> bool:
    """True for a Kaldi ``wav.scp`` entry that is a command ending in ``|``."""
    return wav.rstrip().endswith("|")


class AudioHandle:
    """An open audio file (path or bytes) read frame-accurately, first channel only."""

    def __init__(self, source: Union[str, io.BytesIO], name: str):
        self.name = name
        try:
            self._file = sf.SoundFile(source)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioUnreadableError(f"{name}: not readable audio ({err})") from None
        self.frames = int(self._file.frames)
        self.samplerate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        if self.frames <= 0:
            self.close()
            raise AudioEmptyError(f"{name}: no audio frames")

    @property
    def header_disagrees_with_size(self) -> bool:
        """True when a WAV header promises more data than the file holds (a truncated WAV).

        libsndfile then exposes only the frames present; the log line reads
        ``data : N (should be M)``.
        """
        info = self._file.extra_info
        return any(line.startswith("data :") and "should be" in line
                   for line in info.splitlines())

    def read(self, start: int, count: int) -> np.ndarray:
        """Decode ``count`` frames from ``start``: mono float32 on the int16 scale."""
        if start < 0 or count <= 0 or start + count > self.frames:
            raise ValueError(f"{self.name}: frames [{start}, {start + count}) outside "
                             f"[0, {self.frames})")
        try:
            self._file.seek(start)
            data = self._file.read(count, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioTruncatedError(f"{self.name}: decoding failed: {err}") from None
        if data.shape[0] < count:
            raise AudioTruncatedError(f"{self.name}: got {data.shape[0]} of {count} frames "
                                      f"from {start}")
        mono = mix_to_mono(data)
        mono *= INT16_SCALE
        return mono

    def read_all(self) -> np.ndarray:
        """Decode the whole file (mono, int16 scale)."""
        return self.read(0, self.frames)

    def close(self) -> None:
        """Release the file."""
        self._file.close()

    def __enter__(self) -> "AudioHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayHandle:
    """Decoded audio in memory behind the same interface (used for VAD-cut utterances)."""

    def __init__(self, samples: np.ndarray, samplerate: int, name: str, channels: int = 1):
        if samples.size == 0:
            raise AudioEmptyError(f"{name}: no audio frames")
        self.name = name
        self.samples = samples
        self.frames = int(samples.size)
        self.samplerate = samplerate
        self.channels = channels
        self.header_disagrees_with_size = False

    def read(self, start: int, count: int) -> np.ndarray:
        """Copy ``count`` samples from ``start``."""
        if start < 0 or count <= 0 or start + count > self.frames:
            raise ValueError(f"{self.name}: frames [{start}, {start + count}) outside "
                             f"[0, {self.frames})")
        return self.samples[start:start + count].copy()

    def read_all(self) -> np.ndarray:
        """A copy of all samples."""
        return self.samples.copy()

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "ArrayHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_pipe(command: str, name: str) -> bytes:
    """Standard output of a Kaldi ``wav.scp`` command (given without its ``|``)."""
    result = subprocess.run(command, shell=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-200:]
        raise AudioPipeError(f"{name}: '{command}' exited with {result.returncode}: {message}")
    return result.stdout


def open_audio(wav: Optional[str] = None, data: Optional[bytes] = None,
               name: str = "") -> AudioHandle:
    """Open a file path, a Kaldi pipe command ending in ``|``, or in-memory bytes.

    Raises :class:`AudioMissingError`, :class:`AudioEmptyError`,
    :class:`AudioUnreadableError` or :class:`AudioPipeError` naming ``name``
    (default: the path).
    """
    name = name or (wav or "<bytes>")
    if data is None:
        if wav is None:
            raise ValueError("open_audio needs a path or bytes")
        if is_pipe(wav):
            data = read_pipe(wav.rstrip()[:-1], name)
        else:
            try:
                size = os.path.getsize(wav)
            except FileNotFoundError:
                raise AudioMissingError(f"{wav} does not exist") from None
            except OSError as err:
                raise AudioMissingError(f"{wav}: {err}") from None
            if os.path.isdir(wav):
                raise AudioUnreadableError(f"{wav}: is a folder, not an audio file")
            if size == 0:
                raise AudioEmptyError(f"{wav} is empty")
            return AudioHandle(wav, name)
    if len(data) == 0:
        raise AudioEmptyError(f"{name}: no bytes")
    return AudioHandle(io.BytesIO(data), name)


def apply_vad(handle: AudioHandle, segments: Sequence[Tuple[float, float]]) -> ArrayHandle:
    """Keep the voiced segments (seconds) of a file, concatenated, as an in-memory handle."""
    rate = handle.samplerate
    pieces = []
    for start_s, end_s in segments:
        start = min(int(start_s * rate), handle.frames)
        end = min(int(end_s * rate), handle.frames)
        if end > start:
            pieces.append(handle.read(start, end - start))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return ArrayHandle(samples, rate, handle.name, handle.channels)
