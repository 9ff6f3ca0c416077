"""The stages of the input pipeline, as generators chained by :mod:`dataset`.

Utterances flow as :class:`~wespeaker_py.dataset.lists.Utterance` (metadata, or
undecoded shard bytes) through the shuffle buffer; audio is decoded only in the
loading stage, and then only the chunk that is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from wespeaker_py.audio import (DEFAULT_CHANNEL, AudioCheckError, ChannelChoice, check_samples,
                                is_narrowband_for, read_checked)
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.augment import Augmenter, apply_plan
from wespeaker_py.dataset.chunk import open_utterance, random_window, read_random_span
from wespeaker_py.dataset.lists import Utterance
from wespeaker_py.dataset.speed import SPEEDS, choose_speed_index, shifted_label
from wespeaker_py.dataset.stats import PipelineStats
from wespeaker_py.frontend.framing import num_frames, samples_for_frames

Sample = Dict[str, object]


@dataclass(frozen=True)
class ChunkSettings:
    """How training chunks are cut (all lengths at the target rate unless said otherwise)."""

    sample_rate: int
    num_frms: int
    frame_length_ms: float
    frame_shift_ms: float
    min_num_frames: Optional[int]
    max_num_frames: Optional[int]
    speed_perturb: bool
    expand_speeds: bool
    num_spks: int
    speed_on_device: bool = False

    @property
    def chunk_len(self) -> int:
        """Samples in a chunk of ``num_frms`` frames."""
        return samples_for_frames(self.num_frms, self.sample_rate, self.frame_length_ms,
                                  self.frame_shift_ms)

    @property
    def frame_samples(self) -> int:
        """Samples in one frame: fewer give no features."""
        return samples_for_frames(1, self.sample_rate, self.frame_length_ms, self.frame_shift_ms)

    def frames_of(self, num_samples: int) -> int:
        """Frames of ``num_samples`` samples at the target rate."""
        return num_frames(num_samples, self.sample_rate, self.frame_length_ms,
                          self.frame_shift_ms)

    def _filter_samples(self, num_frames: int, file_rate: int) -> int:
        # WeSpeaker's filter counts frame shifts, in samples of the file as read
        return int(self.frame_shift_ms / 1000 * num_frames * file_rate)

    def min_source_frames(self, file_rate: int) -> Optional[int]:
        """WeSpeaker's minimum length, in samples of a file at ``file_rate``."""
        if self.min_num_frames is None:
            return None
        return self._filter_samples(self.min_num_frames, file_rate)

    def max_source_frames(self, file_rate: int) -> Optional[int]:
        """WeSpeaker's maximum length, in samples of a file at ``file_rate``."""
        if self.max_num_frames is None:
            return None
        return max(1, self._filter_samples(self.max_num_frames, file_rate))


def shuffle_buffer(items: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    """WeSpeaker's local shuffle: fill a buffer of ``size``, shuffle it, empty it, repeat."""
    buffer: List = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            for index in rng.permutation(len(buffer)):
                yield buffer[index]
            buffer = []
    for index in rng.permutation(len(buffer)):
        yield buffer[index]


def with_labels(utts: Iterable[Utterance], spk2id: Optional[Dict[str, int]],
                stats: PipelineStats, training: bool) -> Iterator[Tuple[Utterance, int]]:
    """Attach the speaker id; in training an unknown or absent speaker is skipped."""
    for utt in utts:
        label = -1
        if spk2id is not None and utt.spk is not None:
            label = spk2id.get(utt.spk, -1)
        if training and label < 0:
            if utt.spk is None:
                stats.skip(utt.key, reasons.NO_SPEAKER)
            else:
                stats.skip(utt.key, reasons.UNKNOWN_SPEAKER, f"speaker {utt.spk!r}")
            continue
        yield utt, label


def note_repairs(handle, target_rate: int, stats: PipelineStats, key: str) -> None:
    """Count the repairs an opened utterance needs (extra channels, other rate)."""
    if handle.channels > 1:
        stats.repair(reasons.MULTI_CHANNEL if handle.channel == "first"
                     else f"multi_channel_{handle.channel}_kept", key)
    if handle.samplerate != target_rate:
        stats.repair(reasons.RESAMPLED, key)
        if is_narrowband_for(handle.samplerate, target_rate):
            stats.repair(reasons.NARROW_BAND.format(handle.samplerate), key)


def training_chunks(utts: Iterable[Tuple[Utterance, int]], settings: ChunkSettings,
                    rng: np.random.Generator, stats: PipelineStats) -> Iterator[Sample]:
    """Filter by duration, then read a random (speed-perturbed) chunk of each utterance.

    With ``expand_speeds`` each utterance gives three chunks, one per speed. With
    ``speed_on_device`` a sample may hold the span read before its speed change,
    and ``"speed"`` says which :data:`SPEEDS` index the device still applies (0:
    none); its ``"chunk_len"`` is the length it must end with. A chunk (or span)
    with NaN/inf or only zeros skips the utterance (see :func:`check_samples`; a
    chunk is not held to the energy floor: it may fall in a pause of the utterance).
    """
    chunk_len = settings.chunk_len
    for utt, label in utts:
        try:
            with open_utterance(utt) as handle:
                min_source = settings.min_source_frames(handle.samplerate)
                if min_source is not None and handle.frames < min_source:
                    stats.skip(utt.key, reasons.TOO_SHORT,
                               f"{handle.frames} samples < {min_source} "
                               f"({settings.min_num_frames} frame shifts)")
                    continue
                note_repairs(handle, settings.sample_rate, stats, utt.key)
                if settings.expand_speeds:
                    indices = range(len(SPEEDS))
                elif settings.speed_perturb:
                    indices = [choose_speed_index(rng)]
                else:
                    indices = [0]
                window = random_window(handle.frames,
                                       settings.max_source_frames(handle.samplerate), rng)
                chunks = [(index, read_random_span(handle, chunk_len, settings.sample_rate, rng,
                                                   SPEEDS[index], window,
                                                   settings.speed_on_device))
                          for index in indices]
                for _, (wav, _) in chunks:
                    check_samples(wav, utt.key, floor_dbfs=None)
        except AudioCheckError as err:
            stats.skip(utt.key, err.reason, str(err))
            continue
        for index, (wav, pending) in chunks:
            sample = {"key": utt.key, "wav": wav,
                      "label": shifted_label(label, index, settings.num_spks)}
            if settings.speed_on_device:
                sample["speed"] = index if pending else 0
                sample["chunk_len"] = chunk_len
            yield sample


def whole_utterances(utts: Iterable[Tuple[Utterance, int]], settings: ChunkSettings,
                     stats: PipelineStats,
                     channel: ChannelChoice = DEFAULT_CHANNEL) -> Iterator[Sample]:
    """Whole utterances at the target rate (extraction), mono by ``channel``; every check
    of :func:`~wespeaker_py.audio.read_checked` applies (shorter than one frame is
    too short)."""
    for utt, label in utts:
        try:
            with open_utterance(utt, channel) as handle:
                note_repairs(handle, settings.sample_rate, stats, utt.key)
                wav = read_checked(handle, settings.sample_rate,
                                   min_samples=settings.frame_samples)
        except AudioCheckError as err:
            stats.skip(utt.key, err.reason, str(err))
            continue
        yield {"key": utt.key, "wav": wav, "label": label, "rate": handle.samplerate}


def augmented(samples: Iterable[Sample], augmenter: Augmenter, aug_prob: float,
              rng: np.random.Generator, stats: PipelineStats,
              on_device: bool = False) -> Iterator[Sample]:
    """Reverb or noise on each sample with probability ``aug_prob``.

    ``on_device`` only draws and reads: the :class:`~wespeaker_py.dataset.augment.AugmentPlan`
    goes with the sample as ``"aug"`` (None: leave it as it is) for the device to apply.
    """
    for sample in samples:
        plan = None
        if aug_prob > rng.random():
            length = sample.get("chunk_len", len(sample["wav"]))
            plan = augmenter.plan(length, rng, stats)
            if plan is not None and not on_device:
                sample["wav"] = apply_plan(sample["wav"], plan)
        if on_device:
            sample["aug"] = plan
        yield sample
