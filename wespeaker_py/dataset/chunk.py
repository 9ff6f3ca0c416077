"""Opening an utterance of a list and reading a random fixed-length chunk of it.

Both go through the one audio module (:mod:`wespeaker_py.audio`); what is
here is the training pipeline's choice of what to read.

A chunk of ``L`` output samples at the target rate, played at speed ``s``, covers
``L * s * sr / target`` samples of a file recorded at ``sr``; only those are read
and then resampled from the virtual rate ``sr * s`` to the target rate. Speed
``s`` shortens the signal by ``1/s`` (sox ``speed``), so 0.9 reads fewer samples
and stretches them, 1.1 reads more and compresses them.

WeSpeaker order is kept: an utterance longer than the maximum length is first
cut to a random window of that length, the (virtually) perturbed window is then
chunked at a uniformly random position, and a window shorter than the chunk is
perturbed whole and repeated to the chunk length.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Tuple, Union

import numpy as np

from wespeaker_py.audio import (DEFAULT_CHANNEL, ArrayHandle, AudioHandle, AudioTooShortError,
                                ChannelChoice, apply_vad, open_audio, resample)
from wespeaker_py.dataset.lists import Utterance


def open_utterance(utt: Utterance, channel: ChannelChoice = DEFAULT_CHANNEL
                   ) -> Union[AudioHandle, ArrayHandle]:
    """Open an :class:`Utterance` (path, pipe or shard bytes; VAD segments applied), its
    reads mono by ``channel`` (training keeps the default, the first channel)."""
    handle = open_audio(utt.wav, utt.data, name=utt.key, channel=channel)
    if utt.vad is None:
        return handle
    with handle:
        return apply_vad(handle, utt.vad)


def tile_to_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a short signal end to end and cut it to ``length`` (WeSpeaker's padding)."""
    if samples.size >= length:
        return samples[:length]
    repeats = length // samples.size + 1
    return np.tile(samples, repeats)[:length]


def read_random_chunk(handle, chunk_len: int, target_rate: int, rng: np.random.Generator,
                      speed: Fraction = Fraction(1),
                      max_source_frames: Optional[int] = None) -> np.ndarray:
    """Return exactly ``chunk_len`` samples at ``target_rate`` from a random place of ``handle``.

    ``handle`` is an :class:`~wespeaker_py.audio.AudioHandle` (or ArrayHandle);
    ``max_source_frames`` (in file samples) is WeSpeaker's truncation of long utterances.
    """
    window = random_window(handle.frames, max_source_frames, rng)
    chunk, _ = read_random_span(handle, chunk_len, target_rate, rng, speed, window,
                                defer_speed=False)
    return chunk


def random_window(total: int, max_source_frames: Optional[int],
                  rng: np.random.Generator) -> Tuple[int, int]:
    """``(start, length)`` of the part of a file of ``total`` samples that training chunks
    are cut from: all of it, or a random ``max_source_frames`` of it (WeSpeaker's filter
    truncates a long utterance so, before speed perturbation: the speeds of an
    expanded utterance share the window)."""
    if max_source_frames is not None and total > max_source_frames:
        return int(rng.integers(0, total - max_source_frames + 1)), max_source_frames
    return 0, total


def read_random_span(handle, chunk_len: int, target_rate: int, rng: np.random.Generator,
                     speed: Fraction = Fraction(1), window: Optional[Tuple[int, int]] = None,
                     defer_speed: bool = True) -> Tuple[np.ndarray, bool]:
    """Like :func:`read_random_chunk`, from ``window`` (:func:`random_window`; None: the
    whole file), optionally leaving the speed change.

    With ``defer_speed``, a file at ``target_rate`` long enough for the span gives
    the ``ceil(chunk_len * speed) + 1`` samples read, unresampled, and True: the
    caller resamples them (on the training device). Otherwise the finished chunk
    and False.
    """
    window_start, window_len = window if window is not None else (0, handle.frames)
    virtual_rate = Fraction(handle.samplerate) * speed
    ratio = virtual_rate / target_rate  # file samples per output sample
    if ratio == 1:
        if window_len >= chunk_len:
            start = window_start + int(rng.integers(0, window_len - chunk_len + 1))
            return handle.read(start, chunk_len), False
        return tile_to_length(handle.read(window_start, window_len), chunk_len), False
    # one sample of slack so that the resampled span never falls short of the chunk
    needed = math.ceil(chunk_len * ratio) + 1
    if window_len >= needed:
        start = window_start + int(rng.integers(0, window_len - needed + 1))
        span = handle.read(start, needed)
        if defer_speed and handle.samplerate == target_rate:
            return span, True
        converted = resample(span, float(virtual_rate), float(target_rate))
        if converted.size >= chunk_len:
            return converted[:chunk_len], False
        return tile_to_length(converted, chunk_len), False
    converted = resample(handle.read(window_start, window_len), float(virtual_rate),
                         float(target_rate))
    if converted.size == 0:
        raise AudioTooShortError(f"{handle.name}: {window_len} samples give no sample at "
                                 f"{target_rate} Hz")
    return tile_to_length(converted, chunk_len), False
