"""One whole input -- a path, a ``command |``, an array or a tensor -> checked model samples."""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Set, Tuple, Union

import numpy as np

from wespeaker_py.audio.errors import AudioInputError, AudioSilentError
from wespeaker_py.audio.files import open_audio
from wespeaker_py.audio.resample import resample
from wespeaker_py.audio.samples import (DEFAULT_CHANNEL, ChannelChoice,
                                        as_frames, channel_levels, check_samples,
                                        explain_silent_channel, mix_to_mono, parse_channel,
                                        to_int16_scale, warn_if_quiet_channel)
from wespeaker_py.audio.speech_rules import SpeechLog
from wespeaker_py.utils.values import is_whole_number

logger = logging.getLogger(__name__)
_ignored_rates_warned: Set[Tuple[Any, int]] = set()

# what a user may pass as audio: a path (or Kaldi pipe), a NumPy array, a torch tensor
AudioLike = Union[str, "os.PathLike[str]", np.ndarray, Any]


def describe_audio(audio: AudioLike) -> str:
    """A short name of an input for messages: the path, or the array's shape."""
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    shape = getattr(audio, "shape", None)
    return f"<{type(audio).__name__} of shape {tuple(shape)}>" if shape is not None \
        else f"<{type(audio).__name__}>"


def read_whole(handle, target_rate: int, warn_quiet_channel: bool = False,
               speech: Optional[SpeechLog] = None) -> np.ndarray:
    """All of an open handle's samples at ``target_rate`` (resampled once, no checks);
    ``warn_quiet_channel``: see :meth:`~wespeaker_py.audio.files.AudioHandle.read_all`;
    ``speech``: the speaker API's rules are applied at the file's rate, before resampling
    (an all-zero file, or one with NaN or infinite samples, is kept whole, for
    :func:`check_samples` to refuse: the rules must not cut a bad sample away)."""
    samples = handle.read_all(warn_quiet_channel)
    if speech is not None and samples.any() and np.isfinite(samples).all():
        samples = speech.apply(samples, int(handle.samplerate), handle.name)
    return resample(samples, float(handle.samplerate), float(target_rate))


def read_checked(handle, target_rate: int, min_samples: int = 1,
                 speech: Optional[SpeechLog] = None) -> np.ndarray:
    """:func:`read_whole`, then every check of :func:`check_samples`; when the chosen channel
    of a multi-channel file has no energy, the error names the channels that have some, and
    a first channel far quieter than another is warned about
    (:func:`~wespeaker_py.audio.samples.warn_if_quiet_channel`)."""
    samples = read_whole(handle, target_rate, warn_quiet_channel=True, speech=speech)
    try:
        return check_samples(samples, handle.name, min_samples)
    except AudioSilentError as error:
        raise handle.explain_silence(error) from None


def _as_numpy(audio: Any, name: str) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        return audio
    if hasattr(audio, "detach") and hasattr(audio, "cpu"):   # a torch tensor
        return _tensor_as_numpy(audio.detach().cpu(), name)
    raise AudioInputError(f"{name}: cannot use a {type(audio).__name__} as audio: pass a "
                          f"file path, a NumPy array or a torch tensor")


def _tensor_as_numpy(tensor: Any, name: str) -> np.ndarray:
    """A CPU tensor's samples; float types NumPy lacks (bfloat16, float8) upcast to float32,
    which holds them exactly."""
    try:
        return tensor.numpy()
    except TypeError:   # torch's "unsupported ScalarType": the dtype has no NumPy type
        if tensor.is_floating_point():
            return tensor.float().numpy()
        raise AudioInputError(f"{name}: a torch tensor of dtype {tensor.dtype} cannot be used as "
                              f"audio: pass floats in [-1, 1] or int16 samples") from None


def check_sample_rate(sample_rate: Any, name: str) -> int:
    """``sample_rate`` of the array or tensor ``name`` as an int; a missing one, or one
    that is not a whole number above 0, raises ``AudioInputError`` naming ``name``."""
    if sample_rate is None:
        raise AudioInputError(f"{name}: give sample_rate= with an array or tensor")
    if not is_whole_number(sample_rate) or sample_rate <= 0:
        raise AudioInputError(f"{name}: sample_rate must be a positive integer, "
                              f"got {sample_rate!r}")
    return int(sample_rate)


def warn_if_rate_ignored(sample_rate: Optional[int], file_rate: int, name: str) -> None:
    """Warn (once per pair of rates and process) when ``sample_rate`` was given with a file
    whose own rate ``file_rate`` differs: a file is always read at its own rate."""
    if sample_rate is None or sample_rate == file_rate or \
            (sample_rate, file_rate) in _ignored_rates_warned:
        return
    _ignored_rates_warned.add((sample_rate, file_rate))
    logger.warning("%s: sample_rate=%s is ignored for a file, which is read at its own rate "
                   "(%d Hz); sample_rate= is the rate of arrays and tensors (warned once)",
                   name, sample_rate, file_rate)


def load_audio(audio: AudioLike, target_rate: int, sample_rate: Optional[int] = None,
               name: Optional[str] = None,
               channel: ChannelChoice = DEFAULT_CHANNEL) -> np.ndarray:
    """Model samples of a whole input (:func:`load_audio_with_rate` without the rate)."""
    return load_audio_with_rate(audio, target_rate, sample_rate, name, channel)[0]


def load_audio_with_rate(audio: AudioLike, target_rate: int, sample_rate: Optional[int] = None,
                         name: Optional[str] = None, channel: ChannelChoice = DEFAULT_CHANNEL,
                         speech: Optional[SpeechLog] = None) -> Tuple[np.ndarray, int]:
    """Model samples of a whole input: mono float32 on the int16 scale at ``target_rate``.

    ``audio`` is a file path or Kaldi ``command |`` (its own rate; ``sample_rate``
    is ignored), or a NumPy array / torch tensor at ``sample_rate`` (``[samples]``
    or two-axis with channels; floats in [-1, 1], int16 as stored). The
    channel policy ``channel`` (default: the first channel, see
    :func:`~wespeaker_py.audio.samples.mix_to_mono`) makes it mono, and it is
    resampled once to ``target_rate``. Every check of
    :func:`~wespeaker_py.audio.samples.check_samples` applies; each failure
    raises its named :class:`~wespeaker_py.audio.errors.AudioCheckError` (or an
    ``AudioInputError`` for a wrong type or shape) naming the input, ``name``
    when given. Returns the samples and the rate the input came at (a file's own,
    else ``sample_rate``): what was heard, where the samples say only
    ``target_rate``; the embedding loop, which knows the model's band fills, warns
    about narrow-band audio (:func:`~wespeaker_py.runtime.embedding.embed_stream`).
    ``speech`` (opt-in, the speaker API's): the mono samples at the input's own rate, before
    resampling, lose their digital silence and near-silent edges, and steady noise is
    refused (:class:`~wespeaker_py.audio.speech_rules.SpeechLog`, which records what each
    input lost).
    """
    name = name or describe_audio(audio)
    channel = parse_channel(channel)
    if isinstance(audio, (str, os.PathLike)):
        with open_audio(os.fspath(audio), name=name, channel=channel) as handle:
            samples = read_checked(handle, target_rate, speech=speech)
            source_rate = int(handle.samplerate)
        if speech is not None:
            speech.check(samples, target_rate, name)
        warn_if_rate_ignored(sample_rate, source_rate, name)
        return np.ascontiguousarray(samples, dtype=np.float32), source_rate
    array = _as_numpy(audio, name)   # a wrong type is named before a missing rate
    rate = check_sample_rate(sample_rate, name)
    frames = to_int16_scale(as_frames(array, name), name)
    samples = mix_to_mono(frames, channel, name)
    try:
        check_samples(samples, name)
    except AudioSilentError as error:
        raise explain_silent_channel(error, name, channel, channel_levels(frames)) from None
    warn_if_quiet_channel(frames, channel, name)
    if speech is not None:
        samples = speech.apply(samples, rate, name)
    samples = check_samples(resample(samples, float(rate), float(target_rate)), name)
    if speech is not None:
        speech.check(samples, target_rate, name)
    return np.ascontiguousarray(samples, dtype=np.float32), rate
