"""Opening audio files, Kaldi pipes and in-memory bytes, and reading frames from them.

An :class:`AudioHandle` gives the header facts (frames, sample rate, channels)
without decoding, and ``read(start, count)`` decodes only the frames asked for
(soundfile seeks in WAV and FLAC files and in-memory tar members alike), so
the training pipeline reads only its chunk. Samples come back mono by the
handle's channel policy (:func:`~wespeaker_py.audio.samples.mix_to_mono`,
default: the first channel), float32 on the int16 scale
(:data:`~wespeaker_py.audio.samples.INT16_SCALE`).

A WAV whose header promises more data than the file holds (a copy cut short)
is refused when opened, with :class:`AudioTruncatedError`, for every caller
(files and in-memory bytes such as tar shard members). A header with a size
meaning "unknown" (``0xFFFFFFFF``, as ffmpeg and sox write to a pipe when the
length is not known) is read to the end. The output of a Kaldi ``command |``
is only warned about: streaming writers put their *estimate* of the length in
the header before writing (sox takes it from its input), so the command's exit
status, not the header, says whether it delivered everything.
"""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from wespeaker_py.audio.errors import (AudioEmptyError, AudioMissingError, AudioPipeError,
                                       AudioSegmentError, AudioSilentError,
                                       AudioTruncatedError, AudioUnreadableError)
from wespeaker_py.audio.samples import (DEFAULT_CHANNEL, INT16_SCALE, LEVEL_FRAME, ChannelChoice,
                                        channel_levels, explain_silent_channel, mix_to_mono,
                                        parse_channel, warn_if_quiet_channel)

logger = logging.getLogger(__name__)

# libsndfile's header log line for a data chunk larger than the file: "data : N (should be M)"
_DATA_SIZE_LINE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# data sizes from this up are written by streaming writers that did not know the length
UNKNOWN_LENGTH_BYTES = 0x7FFFF000
# frames per block when a whole file is scanned for its channels' levels
_SCAN_FRAMES = 256 * LEVEL_FRAME
# seconds a VAD segment may end past the end of its audio and be cut there (Kaldi's
# extract-segments --max-overshoot default); further out it is an AudioSegmentError
MAX_SEGMENT_OVERSHOOT = 0.5


def is_pipe(wav: str) -> bool:
    """True for a Kaldi ``wav.scp`` entry that is a command ending in ``|``."""
    return wav.rstrip().endswith("|")


def promised_and_held_bytes(header_log: str) -> Optional[Tuple[int, int]]:
    """``(bytes the WAV header promises, bytes the file holds)`` when it promises more than
    it holds, from libsndfile's header log; None for a whole file or an unknown length."""
    match = _DATA_SIZE_LINE.search(header_log)
    if match is None:
        return None
    promised, held = int(match.group(1)), int(match.group(2))
    if promised <= held or promised >= UNKNOWN_LENGTH_BYTES:
        return None
    return promised, held


class AudioHandle:
    """An open audio file (path or bytes) read frame-accurately, mono by ``channel``."""

    def __init__(self, source: Union[str, io.BytesIO], name: str,
                 channel: ChannelChoice = DEFAULT_CHANNEL, command: Optional[str] = None):
        """``command``: the Kaldi ``wav.scp`` command whose output ``source`` holds."""
        self.name = name
        self.channel = parse_channel(channel)
        try:
            self._file = sf.SoundFile(source)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioUnreadableError(
                f"{name}: {_unreadable_source(name, command)}not readable audio "
                f"({_open_failure(source, err)})") from None
        self.frames = int(self._file.frames)
        self.samplerate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.subtype = str(self._file.subtype)   # the stored sample format, e.g. PCM_16
        if self.frames <= 0:
            self.close()
            raise AudioEmptyError(f"{name}: no audio frames")
        shortfall = promised_and_held_bytes(self._file.extra_info)
        if shortfall is not None:
            promised, held = shortfall
            seconds = self.frames / self.samplerate
            what = (f"its header promises {promised} bytes of audio "
                    f"({seconds * promised / held:.2f} s), ")
            if command is not None:   # streamed: see the module's docstring
                logger.warning("%s: %sthe command gave %d (%.2f s); using those", name, what,
                               held, seconds)
            else:
                self.close()
                raise AudioTruncatedError(f"{name} is truncated: {what}the file holds {held} "
                                          f"({seconds:.2f} s)")

    def read(self, start: int, count: int) -> np.ndarray:
        """Decode ``count`` frames from ``start``: mono float32 on the int16 scale."""
        return self._mono(self.read_frames(start, count))

    def _mono(self, frames: np.ndarray) -> np.ndarray:
        mono = mix_to_mono(frames, self.channel, self.name)
        mono *= INT16_SCALE
        return mono

    def read_frames(self, start: int, count: int, dtype: str = "float32") -> np.ndarray:
        """``[count, channels]`` from frame ``start``, every channel: floats in [-1, 1]
        (float64 holds every stored sample format exactly), integers full scale."""
        if start < 0 or count <= 0 or start + count > self.frames:
            raise ValueError(f"{self.name}: frames [{start}, {start + count}) outside "
                             f"[0, {self.frames})")
        try:
            self._file.seek(start)
            data = self._file.read(count, dtype=dtype, always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioTruncatedError(f"{self.name}: decoding failed: {err}") from None
        if data.shape[0] < count:
            raise AudioTruncatedError(f"{self.name}: got {data.shape[0]} of {count} frames "
                                      f"from {start}")
        return data

    def read_all(self, warn_quiet_channel: bool = False) -> np.ndarray:
        """Decode the whole file (mono, int16 scale). ``warn_quiet_channel`` (a whole input
        to embed): warn when the default first channel is far quieter than another
        (:func:`~wespeaker_py.audio.samples.warn_if_quiet_channel`)."""
        frames = self.read_frames(0, self.frames)
        if warn_quiet_channel:
            warn_if_quiet_channel(frames, self.channel, self.name, INT16_SCALE)
        return self._mono(frames)

    def explain_silence(self, error: AudioSilentError) -> AudioSilentError:
        """``error`` (the chosen channel has no energy) reworded to name the channels with
        signal, when a multi-channel file has any (the file is scanned again)."""
        if self.channels < 2:
            return error
        levels: List[float] = [-np.inf] * self.channels
        for start in range(0, self.frames, _SCAN_FRAMES):
            block = self.read_frames(start, min(_SCAN_FRAMES, self.frames - start))
            levels = np.maximum(levels, channel_levels(block * np.float32(INT16_SCALE)))
        return explain_silent_channel(error, self.name, self.channel, list(levels))

    def close(self) -> None:
        """Release the file."""
        self._file.close()

    def __enter__(self) -> "AudioHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayHandle:
    """Decoded audio in memory behind the same interface (used for VAD-cut utterances)."""

    def __init__(self, samples: np.ndarray, samplerate: int, name: str, channels: int = 1,
                 channel: ChannelChoice = DEFAULT_CHANNEL):
        if samples.size == 0:
            raise AudioEmptyError(f"{name}: no audio frames")
        self.name = name
        self.samples = samples
        self.frames = int(samples.size)
        self.samplerate = samplerate
        self.channels = channels   # of the file the samples came from, made mono by channel
        self.channel = channel

    def read(self, start: int, count: int) -> np.ndarray:
        """Copy ``count`` samples from ``start``."""
        if start < 0 or count <= 0 or start + count > self.frames:
            raise ValueError(f"{self.name}: frames [{start}, {start + count}) outside "
                             f"[0, {self.frames})")
        return self.samples[start:start + count].copy()

    def read_all(self, warn_quiet_channel: bool = False) -> np.ndarray:
        """A copy of all samples (``warn_quiet_channel`` does nothing: the other channels
        are not kept)."""
        return self.samples.copy()

    def explain_silence(self, error: AudioSilentError) -> AudioSilentError:
        """``error`` as it is (the other channels are not kept)."""
        return error

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "ArrayHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unreadable_source(name: str, command: Optional[str]) -> str:
    """What was not audio, as the start of a sentence: a command's output (named unless
    ``name`` already shows it), else nothing to add to ``name``."""
    if command is None:
        return ""
    if command in name:
        return "the command's output is "
    return f"the output of '{command}' is "


def _open_failure(source: Union[str, io.BytesIO], err: Exception) -> str:
    """soundfile's reason for refusing ``source``; for bytes, without its
    ``Error opening <_io.BytesIO object at 0x...>`` prefix, which names nothing."""
    reason = getattr(err, "error_string", None)   # soundfile >= 0.11's LibsndfileError
    if isinstance(source, str) or reason is None:
        return str(err)
    return reason


def read_pipe(command: str, name: str) -> bytes:
    """Standard output of a Kaldi ``wav.scp`` command (given without its ``|``).

    The command's stdin is ``/dev/null``: a command that reads it (ffmpeg without
    ``-nostdin``) would otherwise take the terminal's keys, or stop a background job.
    """
    result = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-200:]
        raise AudioPipeError(f"{name}: '{command}' exited with {result.returncode}: {message}")
    return result.stdout


def open_audio(wav: Optional[str] = None, data: Optional[bytes] = None,
               name: str = "", channel: ChannelChoice = DEFAULT_CHANNEL) -> AudioHandle:
    """Open a file path, a Kaldi pipe command ending in ``|``, or in-memory bytes.

    Reads give the channel(s) ``channel`` says (see
    :func:`~wespeaker_py.audio.samples.mix_to_mono`). Raises
    :class:`AudioMissingError`, :class:`AudioEmptyError`,
    :class:`AudioUnreadableError`, :class:`AudioTruncatedError` or
    :class:`AudioPipeError` naming ``name`` (default: the path).
    """
    name = name or (wav or "<bytes>")
    command = None
    if data is None:
        if wav is None:
            raise ValueError("open_audio needs a path or bytes")
        if not is_pipe(wav):
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
            return AudioHandle(wav, name, channel)
        command = wav.rstrip()[:-1].strip()
        data = read_pipe(command, name)
    if len(data) == 0:
        raise AudioEmptyError(f"{name}: no bytes")
    return AudioHandle(io.BytesIO(data), name, channel, command)


def audio_duration(path: str) -> float:
    """Seconds of audio in the file ``path``, from its header (nothing is decoded).

    Raises the errors of :func:`open_audio`.
    """
    with open_audio(path) as handle:
        return handle.frames / float(handle.samplerate)


def segment_outside(start_s: float, end_s: Optional[float], frames: int, rate: int
                    ) -> Optional[str]:
    """Why the segment ``[start_s, end_s]`` (seconds; an ``end_s`` of None runs to the end,
    a Kaldi segment ending in -1) cannot be cut from ``frames`` of audio at ``rate``
    (Kaldi's ``extract-segments`` rule: it starts at or past the end, or ends more than
    :data:`MAX_SEGMENT_OVERSHOOT` past it), or None when it can."""
    if int(start_s * rate) >= frames:
        return "starts at or past"
    if end_s is not None and int(end_s * rate) > frames + int(MAX_SEGMENT_OVERSHOOT * rate):
        return f"ends more than {MAX_SEGMENT_OVERSHOOT:g} s past"
    return None


def describe_segment(start_s: float, end_s: Optional[float]) -> str:
    """The segment ``[start_s, end_s]`` (seconds) as messages name it: ``[1.5, 3] s``, an
    ``end_s`` of None (a Kaldi segment ending in -1) shown as ``end``."""
    end = "end" if end_s is None else f"{end_s:g}"
    return f"[{start_s:g}, {end}] s"


def apply_vad(handle: AudioHandle, segments: Sequence[Tuple[float, Optional[float]]]
              ) -> ArrayHandle:
    """Keep the voiced segments (seconds) of a file, concatenated, as an in-memory handle.

    As Kaldi's ``extract-segments``, an end of None (a segments file's -1) runs to the end
    of the audio, and a segment that ends past the end of the audio by at most
    :data:`MAX_SEGMENT_OVERSHOOT` is cut at the end; one that ends further out, or starts
    at or past the end, is an :class:`AudioSegmentError` naming the utterance, the segment
    and the audio's length.
    """
    rate = handle.samplerate
    pieces = []
    for start_s, end_s in segments:
        start = int(start_s * rate)
        end = handle.frames if end_s is None else int(end_s * rate)
        where = segment_outside(start_s, end_s, handle.frames, rate)
        if where is not None:
            raise AudioSegmentError(
                f"{handle.name}: vad segment {describe_segment(start_s, end_s)} {where} the end of "
                f"its audio ({handle.frames / rate:.3f} s); check the utterance's VAD "
                f"segments against its recording")
        end = min(end, handle.frames)
        if end > start:
            pieces.append(handle.read(start, end - start))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return ArrayHandle(samples, rate, handle.name, handle.channels, handle.channel)
