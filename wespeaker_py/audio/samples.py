"""The sample convention, the channel policy, the energy floor, and the checks every caller shares.

Samples given to a model are mono float32 on the int16 scale (a full-scale
sine peaks at 32768, as Kaldi and WeSpeaker feed fbank): float audio in [-1, 1]
is multiplied by :data:`INT16_SCALE`, int16 audio is taken as it is.

**Channel policy** (:func:`mix_to_mono`, one place for file reads and arrays):
``"first"`` (the default) keeps the first channel, as training always does
and WeSpeaker does, so embeddings match the model's training and existing
results stay bit-identical; ``"mean"`` averages the channels; ``"loudest"``
keeps the channel of highest energy (variance) in what is read; an integer
``N`` keeps channel N (from 0). Mono input is the same under every policy;
a channel number a file does not have is an :class:`AudioChannelError`.

**Energy floor** (:data:`SILENCE_FLOOR_DBFS`): a whole input whose loudest
frame of :data:`LEVEL_FRAME` samples has an RMS (the frame's mean removed)
below the floor has no energy to embed (digital silence, dither-level noise)
and is refused with :class:`AudioNoEnergyError` (all samples zero:
:class:`AudioSilentError`). Levels are dBFS: RMS relative to the int16 full
scale 32768 (a full-scale sine is -3 dBFS, one LSB of RMS is -90.3 dBFS). The
floor, -88 dBFS (1.3 LSB of RMS), was measured by ``bench/bench_audio_energy.py``
(figures in docs/troubleshooting.md): a signal within ±1 LSB cannot pass
-90.3 dBFS (the ±1 LSB dither measured -91.5), rounded Gaussian noise of 1 LSB
deviation reached -88.9 over 10 minutes; real speech (960 files) is at -48 to
-5 dBFS as recorded, and played 50 dB quieter and stored as int16 keeps 955 of
960 files above the floor (the 5 below were recorded under -39 dBFS, so little
of them is left above one LSB).

**A quiet first channel** (:func:`warn_if_quiet_channel`): under ``"first"``, a
whole input whose channel 0 is :data:`QUIET_CHANNEL_DB` or more below its
loudest channel (a dead channel carrying only hiss beside the speech) is still
embedded from channel 0, as WeSpeaker does, with a warning suggesting
``--channel``. A chosen channel below the floor beside channels with signal is an
:class:`AudioSilentChannelError` (reason ``silent_channel``) naming them
(:func:`explain_silent_channel`): the wrong channel, counted apart from silent audio.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from wespeaker_py.audio.errors import (AudioChannelError, AudioEmptyError, AudioInputError,
                                       AudioNoEnergyError, AudioNonFiniteError,
                                       AudioSilentChannelError, AudioSilentError,
                                       AudioTooShortError)
from wespeaker_py.utils.values import is_whole_number

logger = logging.getLogger(__name__)

# float audio in [-1, 1] times this is the int16 scale models see; divide to go back
INT16_SCALE = 32768.0
# the largest float sample taken as [-1, 1] audio (processing may overshoot 1 a little)
FLOAT_PEAK_LIMIT = 2.0
# a model built for at least WIDEBAND_RATE given audio at NARROWBAND_RATE or lower is
# warned about: the upper half of its spectrum is empty and embeddings degrade
WIDEBAND_RATE = 16000
NARROWBAND_RATE = 8000

# the channel policy: one of these names, or a channel number (int, from 0)
ChannelChoice = Union[str, int]
CHANNEL_POLICIES = ("first", "mean", "loudest")
DEFAULT_CHANNEL: ChannelChoice = "first"

# the energy check: frames of LEVEL_FRAME samples (25 ms at 16 kHz); an input whose loudest
# frame is below SILENCE_FLOOR_DBFS has no energy (measured: bench/bench_audio_energy.py)
LEVEL_FRAME = 400
SILENCE_FLOOR_DBFS = -88.0
# under the policy "first", channel 0 this far below the loudest channel is warned about
QUIET_CHANNEL_DB = 30.0
# frames per block of the level computations: small, so that speech is found in the first
# block; rows per block of the channel powers (both bound the memory on long inputs)
_BLOCK_FRAMES = 64
_POWER_BLOCK_ROWS = 1 << 18

_rates_warned: Set[Tuple[int, int, str]] = set()
_quiet_warned: Set[str] = set()


def parse_channel(value: Union[str, int]) -> ChannelChoice:
    """A channel policy from user input: ``first``, ``mean``, ``loudest`` or a number ``N >= 0``.

    Raises :class:`~wespeaker_py.errors.AudioInputError` (a ``ValueError``) otherwise.
    """
    if is_whole_number(value):
        number = int(value)
    elif isinstance(value, str) and value.strip().lower() in CHANNEL_POLICIES:
        return value.strip().lower()
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise AudioInputError(f"channel must be one of {', '.join(CHANNEL_POLICIES)} or a "
                              f"channel number from 0, got {value!r}")
    if number < 0:
        raise AudioInputError(f"channel numbers start at 0, got {number}")
    return number


def describe_channel(channel: ChannelChoice) -> str:
    """The policy in words, for messages."""
    if channel == "first":
        return "channel 0 (the default: --channel first)"
    if channel == "mean":
        return "the mean of the channels (--channel mean)"
    if channel == "loudest":
        return "the loudest channel (--channel loudest)"
    return f"channel {channel} (--channel {channel})"


def _channel_powers(frames: np.ndarray) -> np.ndarray:
    """Variance of each column of ``[frames, channels]``, in float64, a block at a time."""
    count = max(frames.shape[0], 1)
    powers = np.zeros(frames.shape[1])
    for index in range(frames.shape[1]):
        total = squares = 0.0
        for start in range(0, frames.shape[0], _POWER_BLOCK_ROWS):
            block = frames[start:start + _POWER_BLOCK_ROWS, index].astype(np.float64)
            total += float(block.sum())
            squares += float(np.einsum("i,i->", block, block))   # not BLAS: no threads
        powers[index] = squares / count - (total / count) ** 2
    return powers


def mix_to_mono(frames: np.ndarray, channel: ChannelChoice = DEFAULT_CHANNEL,
                name: str = "<audio>") -> np.ndarray:
    """The channel policy, in one place: ``[frames, channels]`` -> ``[frames]`` (contiguous).

    File reads and arrays both go through it; see the module's docstring for
    the policies. Raises :class:`AudioChannelError` for a channel number the
    input does not have.
    """
    channels = frames.shape[1]
    channel = parse_channel(channel)
    if isinstance(channel, int):
        if channel >= channels:
            raise AudioChannelError(f"{name} has {channels} channel(s), numbered from 0: "
                                    f"there is no channel {channel}")
        return np.ascontiguousarray(frames[:, channel])
    if channel == "first" or channels == 1:
        return np.ascontiguousarray(frames[:, 0])
    if channel == "mean":
        mixed = frames[:, 0].astype(np.float32)     # a copy, summed into column by column
        for index in range(1, channels):
            mixed += frames[:, index]
        mixed /= np.float32(channels)
        return mixed
    return np.ascontiguousarray(frames[:, int(np.argmax(_channel_powers(frames)))])


def as_frames(samples: np.ndarray, name: str) -> np.ndarray:
    """``[samples]`` as one column; a two-axis array as ``[frames, channels]`` (the shorter
    axis holds the channels)."""
    if samples.ndim == 1:
        return samples[:, None]
    if samples.ndim != 2:
        raise AudioInputError(f"{name}: expected [samples] or a two-axis "
                              f"[channels, samples] array, got shape {samples.shape}")
    frames = samples.T if samples.shape[0] <= samples.shape[1] else samples
    if frames.shape[1] > 2:
        # a batch of waveforms stacked into one array looks like multi-channel audio
        logger.warning("%s: read as ONE recording of %d channels, %d samples each; to embed "
                       "%d waveforms, pass them as a list (embed_many, embed_waveforms)", name,
                       frames.shape[1], frames.shape[0], frames.shape[1])
    return frames


def to_int16_scale(samples: np.ndarray, name: str) -> np.ndarray:
    """float32 samples on the int16 scale: floats are read as [-1, 1], int16 as stored.

    Floats reaching beyond :data:`FLOAT_PEAK_LIMIT` are refused: they are on another
    scale (int16-scale floats, as WeSpeaker's ``extract_embedding_from_pcm`` takes), and
    scaling them by 32768 would embed a distorted signal without a word.
    """
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):
        raise AudioInputError(f"{name}: integer samples must be int16, got {samples.dtype}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioInputError(f"{name}: samples of type {samples.dtype} are not audio")
    finite = np.abs(samples[np.isfinite(samples)])
    peak = float(finite.max()) if finite.size else 0.0
    if peak > FLOAT_PEAK_LIMIT:
        raise AudioInputError(f"{name}: float samples are read as lying in [-1, 1], but these "
                              f"reach {peak:g}; samples on the int16 scale: pass them as "
                              f"int16, or divided by {INT16_SCALE:g}")
    return samples.astype(np.float32) * np.float32(INT16_SCALE)


# -- energy ------------------------------------------------------------------------------------

def frame_powers(samples: np.ndarray, frame: int = LEVEL_FRAME) -> Iterator[np.ndarray]:
    """Mean-removed mean square of each frame of ``frame`` samples (the last, partial frame
    included), a block of frames at a time, in float64 (the memory stays that of a block)."""
    size = samples.shape[0]
    step = _BLOCK_FRAMES * frame
    for start in range(0, size, step):
        block = np.asarray(samples[start:start + step], dtype=np.float64)
        whole = block.shape[0] // frame * frame
        parts = [block[:whole].reshape(-1, frame)] if whole else []
        if whole < block.shape[0]:
            parts.append(block[whole:][None, :])
        for part in parts:
            centred = part - part.mean(axis=1, keepdims=True)
            yield np.einsum("ij,ij->i", centred, centred) / part.shape[1]


def power_to_dbfs(power: float) -> float:
    """A mean square on the int16 scale in dBFS (RMS relative to 32768); -inf for 0."""
    return 10.0 * math.log10(power / INT16_SCALE ** 2) if power > 0 else -math.inf


def loudest_frame_dbfs(samples: np.ndarray) -> float:
    """Level of the loudest frame of int16-scale ``samples``: RMS in dBFS, mean removed."""
    return power_to_dbfs(max((float(p.max()) for p in frame_powers(samples)), default=0.0))


def has_energy(samples: np.ndarray, floor_dbfs: float = SILENCE_FLOOR_DBFS) -> bool:
    """True when some frame of int16-scale ``samples`` reaches ``floor_dbfs`` (stops there:
    for speech the first block decides)."""
    floor = INT16_SCALE ** 2 * 10.0 ** (floor_dbfs / 10.0)
    return any(bool((powers >= floor).any()) for powers in frame_powers(samples))


def channel_levels(frames: np.ndarray, scale: float = 1.0) -> List[float]:
    """:func:`loudest_frame_dbfs` of each column of ``[frames, channels]`` times ``scale``
    (1 for int16-scale frames, :data:`INT16_SCALE` for [-1, 1] ones)."""
    return [loudest_frame_dbfs(frames[:, index] * np.float32(scale) if scale != 1.0
                               else frames[:, index]) for index in range(frames.shape[1])]


def warn_if_quiet_channel(frames: np.ndarray, channel: ChannelChoice, name: str,
                          scale: float = 1.0) -> None:
    """Under the policy ``"first"``, log a warning (once per ``name`` and process) when
    channel 0 of the whole input ``[frames, channels]`` (times ``scale``, see
    :func:`channel_levels`) is :data:`QUIET_CHANNEL_DB` or more below its loudest
    channel. A channel 0 below the energy floor is left to the silence check, whose
    error names the channels with signal (:func:`explain_silent_channel`)."""
    if channel != "first" or frames.shape[1] < 2 or name in _quiet_warned:
        return
    levels = channel_levels(frames, scale)
    loudest = int(np.argmax(levels))
    if levels[0] < SILENCE_FLOOR_DBFS or levels[loudest] - levels[0] < QUIET_CHANNEL_DB:
        return
    _quiet_warned.add(name)
    logger.warning("%s: channel 0 (the default: --channel first) is at %.1f dBFS, %.1f dB "
                   "below channel %d at %.1f dBFS; it is embedded, but if it holds no speech "
                   "choose the speech channel with --channel %d or --channel loudest (channel= "
                   "in the Python API)", name, levels[0], levels[loudest] - levels[0], loudest,
                   levels[loudest], loudest)


def explain_silent_channel(error: AudioSilentError, name: str, channel: ChannelChoice,
                           levels: Sequence[float]) -> AudioSilentError:
    """``error`` as an :class:`AudioSilentChannelError` when the input has other channels
    with energy: it names the chosen channel, the channels with signal, and how to choose
    one."""
    live = [index for index, level in enumerate(levels) if level >= SILENCE_FLOOR_DBFS]
    if len(levels) < 2 or not live:
        return error
    loudest = max(live, key=lambda index: levels[index])
    explained = AudioSilentChannelError(
        f"{name} has {len(levels)} channels and {describe_channel(channel)} has no energy, "
        f"but channel(s) {', '.join(map(str, live))} have signal (loudest: channel {loudest} "
        f"at {levels[loudest]:.1f} dBFS): choose one with --channel {loudest} or "
        f"--channel loudest (channel= in the Python API)")
    explained.live_channels = tuple(live)
    return explained


# -- the checks --------------------------------------------------------------------------------

def check_samples(samples: np.ndarray, name: str, min_samples: int = 1,
                  floor_dbfs: Optional[float] = SILENCE_FLOOR_DBFS) -> np.ndarray:
    """Return ``samples`` (int16 scale), or raise the named error saying why no model should
    see them.

    In order: no samples (:class:`AudioEmptyError`), fewer than ``min_samples``
    (:class:`AudioTooShortError`), NaN or infinite samples
    (:class:`AudioNonFiniteError`), every sample zero (:class:`AudioSilentError`),
    no frame reaching ``floor_dbfs`` (:class:`AudioNoEnergyError`; None: no
    energy check, for the training pipeline's chunks, which are parts of an
    utterance and may fall in a pause).
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
    if floor_dbfs is not None and not has_energy(samples, floor_dbfs):
        offset = float(np.mean(samples, dtype=np.float64))
        # the level is taken with each frame's mean removed, so a constant offset has none
        what = (f"a constant offset of {offset:.0f} (DC) with nothing on it" if abs(offset) >= 1
                else "digital silence or dither-level noise")
        raise AudioNoEnergyError(
            f"{name} has no energy: its loudest {LEVEL_FRAME}-sample frame is at "
            f"{loudest_frame_dbfs(samples):.1f} dBFS, below the {floor_dbfs:g} dBFS floor "
            f"({what})")
    return samples


def is_narrowband_for(rate: int, target_rate: int) -> bool:
    """Whether audio at ``rate`` is narrow-band for a model at ``target_rate``: at
    :data:`NARROWBAND_RATE` or lower for a model built for :data:`WIDEBAND_RATE` or more."""
    return rate <= NARROWBAND_RATE and target_rate >= WIDEBAND_RATE


def warn_if_narrowband(rate: int, target_rate: int, name: str,
                       why: str = "nothing fills it") -> None:
    """Log a warning, once per process, pair of rates and ``why``, when audio at
    :data:`NARROWBAND_RATE` or lower goes to a model built for :data:`WIDEBAND_RATE`
    or more as it is (upsampling cannot restore the missing band); ``why`` says why
    its band stays empty (no band fill for it, an ONNX model, ...)."""
    if not is_narrowband_for(rate, target_rate) or (rate, target_rate, why) in _rates_warned:
        return
    _rates_warned.add((rate, target_rate, why))
    logger.warning("%d Hz audio (first: %s) for a model built for %d Hz: it is upsampled, "
                   "but the band above %d Hz stays empty and the embeddings may be less "
                   "accurate: %s (warned once)", rate, name, target_rate, rate // 2, why)
