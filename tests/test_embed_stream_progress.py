"""embed_stream's progress bar counts outcomes (embedded or skipped) as they come out."""
import io

import numpy as np
import pytest
import torch

from wespeaker_py.errors import AudioInputError
from wespeaker_py.runtime import embedding
from wespeaker_py.runtime.embedding import embed_stream
from wespeaker_py.utils.progress import INTERVAL_ENV, PROGRESS_ENV

RATE = 16000
DIM = 3


class FakeBackend:
    """Features are the waveform as a ``[samples, 1]`` column; the embedding is their sum."""

    sample_rate = RATE
    min_samples = 10
    min_seconds = min_samples / RATE

    def __init__(self):
        self.batch_sizes = []

    def prepare(self, wav, heard_rate=0):
        return torch.as_tensor(np.asarray(wav, dtype=np.float32))[:, None]

    def missing_band_fill(self, heard_rate):
        return ""

    def band_fill_for(self, heard_rate):
        return None

    def is_too_short(self, prepared):
        return prepared.shape[0] < self.min_samples

    def embed(self, batch, heard_rate=0):
        self.batch_sizes.append(int(batch.shape[0]))
        sums = batch.sum(dim=(1, 2)).numpy()
        return np.repeat(sums[:, None], DIM, axis=1).astype(np.float32)


def read(audio):
    if audio is None:
        raise AudioInputError("no such file")
    return audio, RATE


# two of one length (a batch of 2 while reading), a failed read, a too-short input, and
# three of distinct lengths that wait in their buckets for the final drain
ITEMS = [("a", np.ones(100)), ("b", np.ones(200)), ("bad", None), ("c", np.full(200, 2.0)),
         ("short", np.ones(5)), ("d", np.ones(300)), ("e", np.ones(400))]


@pytest.fixture
def bars(monkeypatch):
    """The bars embed_stream makes, each writing its lines to its own StringIO."""
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    made = []
    real = embedding.progress_bar

    def progress_bar(*args, **kwargs):
        stream = io.StringIO()
        bar = real(*args, file=stream, **kwargs)
        made.append((bar, stream))
        return bar

    monkeypatch.setattr(embedding, "progress_bar", progress_bar)
    return made


def test_the_bar_moves_with_outcomes_not_with_reading(bars):
    backend = FakeBackend()
    read_all_at = []

    def items():
        yield from ITEMS
        read_all_at.append(bars[0][0].n)   # every input read; the drain comes next

    counts, keys = [], []
    for outcome in embed_stream(backend, items(), batch_size=2, read=read, progress=True,
                                desc="extracting", total=len(ITEMS)):
        counts.append(bars[0][0].n)
        keys.append(outcome.key)
    bar, stream = bars[0]
    # each outcome moved the bar by one as it came out, skips included
    assert counts == list(range(1, len(ITEMS) + 1))
    assert sorted(keys) == sorted(key for key, _ in ITEMS)
    # "a", "d", "e" were still waiting in their buckets when reading finished
    assert read_all_at == [4] and read_all_at[0] < len(ITEMS)
    assert backend.batch_sizes == [2, 1, 1, 1]
    assert bar.n == bar.total == len(ITEMS)
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("extracting:") and f"{len(ITEMS)}/{len(ITEMS)}" in last
    assert "utt/s" in last


def test_the_total_is_the_length_of_a_list_of_items(bars):
    outcomes = list(embed_stream(FakeBackend(), list(ITEMS), batch_size=2, read=read,
                                 progress=True))
    bar, stream = bars[0]
    assert len(outcomes) == bar.n == bar.total == len(ITEMS)
    assert stream.getvalue().splitlines()[-1].startswith("embedding:")


def test_a_generator_without_a_total_is_counted_without_one(bars):
    outcomes = list(embed_stream(FakeBackend(), iter(ITEMS), batch_size=2, read=read,
                                 progress=True))
    bar, _ = bars[0]
    assert bar.total is None and bar.n == len(outcomes) == len(ITEMS)
