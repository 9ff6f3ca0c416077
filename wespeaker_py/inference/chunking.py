"""One random fixed-length chunk per utterance, as WeSpeaker's batch extraction makes them.

WeSpeaker's ``extract.py`` with a batch size above 1 (its recipes use 16 for
vox2_dev) embeds, of every utterance, one chunk of ``num_frms`` frames taken at a
uniformly random position of the resampled waveform; an utterance shorter than
the chunk is repeated end to end and cut to the chunk length. No utterance is
dropped (the length filter is off at extraction). Its chunk length in samples is
that of ``num_frms`` frames, ``(num_frms - 1) * shift + window``, with the
dataset's frame settings (10 ms / 25 ms unless the front-end block says
otherwise), also for an SSL front-end.

Here each utterance's position comes from a generator seeded by ``(seed, key)``,
so a chunk does not depend on the order of the list, its split into jobs or the
number of DataLoader workers, and a run with the same seed is repeatable.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from wespeaker_py.frontend.framing import samples_for_frames


def chunk_samples(num_frames: int, sample_rate: int, frame_length_ms: float,
                  frame_shift_ms: float) -> int:
    """Samples of a chunk of ``num_frames`` frames (WeSpeaker's ``chunk_len``)."""
    if num_frames < 1:
        raise ValueError(f"a chunk needs at least one frame, got num_frms={num_frames}")
    return samples_for_frames(num_frames, sample_rate, frame_length_ms, frame_shift_ms)


def utterance_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the utterance ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


class RandomChunker:
    """Cut a ``[samples]`` waveform to one random chunk of ``chunk_len`` samples."""

    def __init__(self, chunk_len: int, seed: int):
        if chunk_len < 1:
            raise ValueError(f"chunk length must be at least one sample, got {chunk_len}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.chunk_len = chunk_len
        self.seed = seed

    def __call__(self, key: str, wav: torch.Tensor) -> torch.Tensor:
        length = int(wav.shape[0])
        if length == 0:
            raise ValueError(f"{key}: an empty waveform has no chunk")
        if length >= self.chunk_len:
            start = int(utterance_rng(self.seed, key).integers(0, length - self.chunk_len + 1))
            return wav[start:start + self.chunk_len]
        repeats = self.chunk_len // length + 1
        return wav.repeat(repeats)[:self.chunk_len]
