"""Opening utterances with soundfile and reading mono frames from them.

An :class:`AudioHandle` gives the header facts (frames, sample rate, channels)
without decoding, and ``read(start, count)`` decodes only the frames asked for
(soundfile seeks in WAV and FLAC files and in-memory tar members alike).
Samples come back as float32 on the int16 scale that Kaldi and WeSpeaker use.

Problems are raised as :class:`AudioError` carrying one of the reasons of
:mod:`wespeaker_py.dataset.stats`, so the pipeline can count and skip them.
"""
from __future__ import annotations

import io
import os
import subprocess
from typing import Optional, Union

import numpy as np
import soundfile as sf

from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import Segments, Utterance
from wespeaker_py.errors import AudioInputError

INT16_SCALE = 32768.0


class AudioError(AudioInputError):
    """An utterance that cannot be used; ``reason`` is a stats reason, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def check_samples(samples: np.ndarray, name: str) -> np.ndarray:
    """Return ``samples``, or raise :class:`AudioError` when no model should see them.

    NaN or infinite samples (a broken float WAV) and all-zero audio (digital
    silence, a file of zeros) are refused here, where audio is read, so that
    they are counted as skips instead of reaching a model.
    """
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise AudioError(reasons.NON_FINITE,
                         f"{name}: {bad} of {samples.size} samples are NaN or infinite")
    if not samples.any():
        raise AudioError(reasons.ALL_ZERO, f"{name}: all {samples.size} samples are zero")
    return samples


class AudioHandle:
    """An open audio file (path or bytes) read frame-accurately, first channel only."""

    def __init__(self, source: Union[str, io.BytesIO], name: str):
        self.name = name
        try:
            self._file = sf.SoundFile(source)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(reasons.NOT_AUDIO, f"{name}: {err}") from None
        self.frames = int(self._file.frames)
        self.samplerate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        if self.frames <= 0:
            self.close()
            raise AudioError(reasons.EMPTY, f"{name}: no audio frames")

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
            raise AudioError(reasons.TRUNCATED, f"{self.name}: decoding failed: {err}") from None
        if data.shape[0] < count:
            raise AudioError(reasons.TRUNCATED,
                             f"{self.name}: got {data.shape[0]} of {count} frames from {start}")
        mono = np.ascontiguousarray(data[:, 0])
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
            raise AudioError(reasons.EMPTY, f"{name}: no audio frames")
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


def _run_pipe(command: str, name: str) -> bytes:
    result = subprocess.run(command, shell=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-200:]
        raise AudioError(reasons.PIPE_FAILED,
                         f"{name}: '{command}' exited with {result.returncode}: {message}")
    return result.stdout


def open_audio(wav: Optional[str] = None, data: Optional[bytes] = None,
               name: str = "") -> AudioHandle:
    """Open a file path, a Kaldi pipe command ending in ``|``, or in-memory bytes."""
    name = name or (wav or "<bytes>")
    if data is None:
        if wav is None:
            raise ValueError("open_audio needs a path or bytes")
        if wav.rstrip().endswith("|"):
            data = _run_pipe(wav.rstrip()[:-1], name)
        else:
            try:
                size = os.path.getsize(wav)
            except FileNotFoundError:
                raise AudioError(reasons.MISSING, f"{wav} does not exist") from None
            except OSError as err:
                raise AudioError(reasons.MISSING, f"{wav}: {err}") from None
            if size == 0:
                raise AudioError(reasons.EMPTY, f"{wav} is empty")
            return AudioHandle(wav, name)
    if len(data) == 0:
        raise AudioError(reasons.EMPTY, f"{name}: no bytes")
    return AudioHandle(io.BytesIO(data), name)


def apply_vad(handle: AudioHandle, segments: Segments) -> ArrayHandle:
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


def open_utterance(utt: Utterance):
    """Open an :class:`Utterance` (path, pipe or bytes; VAD segments applied)."""
    handle = open_audio(utt.wav, utt.data, name=utt.key)
    if utt.vad is None:
        return handle
    with handle:
        return apply_vad(handle, utt.vad)
