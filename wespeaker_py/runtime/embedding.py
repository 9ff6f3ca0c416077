"""The one embedding loop: keyed waveforms in, embeddings (or why not) out, in equal-length batches.

``bin.extract``, ``SpeakerModel.embed`` / ``embed_many`` / ``embed_waveforms``
(hence ``wespeaker-py embed --wav_scp`` and the diarization windows) all run
:func:`embed_stream`. Each input is read (when a ``read`` function is given),
turned into features by the backend, checked against the model's shortest
input, and queued in :class:`~wespeaker_py.runtime.batching.LengthBuckets`, so
a batch only ever holds inputs of identical length (and of one band fill): no
padding, and each embedding equals the one the input gets alone. Nothing is given a wrong
embedding: an input that cannot be read, is too short or gives a non-finite
embedding comes out as a :class:`Outcome` with the reason, and the caller
skips and counts it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Any, Callable, Iterable, Iterator, List, Optional, Protocol, Sized,
                    Tuple)

import numpy as np

from wespeaker_py.audio.resample import heard_rate_of
from wespeaker_py.audio.samples import warn_if_narrowband
from wespeaker_py.dataset.stats import NON_FINITE_EMBEDDING, TOO_SHORT_FOR_MODEL
from wespeaker_py.errors import AudioInputError
from wespeaker_py.runtime.batching import LengthBuckets
from wespeaker_py.utils.progress import progress_bar

# features waiting for a batch of their length, by default
DEFAULT_BUFFER_BYTES = 256 << 20


class Backend(Protocol):
    """What the loop drives: :class:`~wespeaker_py.runtime.engine.TorchBackend` or the
    API's ONNX backend."""

    sample_rate: int
    min_seconds: float

    def prepare(self, wav: Any, heard_rate: int = 0) -> Any:
        """What is batched for one int16-scale waveform (features, or the waveform);
        ``heard_rate``: the rate it came at, when below the backend's."""

    def missing_band_fill(self, heard_rate: int) -> str:
        """Why audio heard at ``heard_rate`` keeps its empty top band ('' when a band
        fill fills it)."""

    def band_fill_for(self, heard_rate: int) -> Any:
        """The band fill for audio heard at ``heard_rate``, or None."""

    def is_too_short(self, prepared: Any) -> bool:
        """Whether ``prepared`` is shorter than the model's shortest input."""

    def embed(self, batch: Any, heard_rate: int = 0) -> np.ndarray:
        """``[B, E]`` float32 embeddings of a batch of equal-length prepared inputs that
        came at ``heard_rate`` (0: at the backend's rate)."""


@dataclass
class Outcome:
    """One input's result: its ``embedding``, or None with a ``skip`` reason and ``detail``;
    ``heard_rate``: the rate below the backend's that its audio came at (0: none)."""

    key: str
    embedding: Optional[np.ndarray]
    skip: str = ""
    detail: str = ""
    heard_rate: int = 0


def embed_stream(backend: Backend, items: Iterable[Tuple[str, Any]], batch_size: int,
                 read: Optional[Callable[[Any], Tuple[Any, int]]] = None,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES, progress: bool = False,
                 desc: str = "embedding", total: Optional[int] = None,
                 position: int = 0, heard_rate: int = 0) -> Iterator[Outcome]:
    """An :class:`Outcome` for every ``(key, audio)`` of ``items``, as batches complete.

    ``audio`` is an int16-scale waveform at the backend's rate that came at
    ``heard_rate`` (when lower than the backend's; 0: at the backend's, see
    :meth:`~wespeaker_py.runtime.engine.TorchBackend.band_fill_for`), or, with
    ``read``, what ``read`` turns into ``(waveform, the rate it came at)`` (an
    :class:`~wespeaker_py.errors.AudioInputError` from it skips the item).
    Outcomes come in batch order, not input order. ``progress`` shows a
    :func:`~wespeaker_py.utils.progress.progress_bar` (``desc``, ``position``) that
    counts outcomes as they come out, embedded or skipped, up to ``total`` (by default
    ``len(items)`` when ``items`` has one): its rate is the embedding rate, not the
    reading rate, since inputs wait in length buckets. Narrow-band audio that the
    backend has no band fill for is warned about, once per rate.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    buckets = LengthBuckets(batch_size, buffer_bytes)
    heard_rate = heard_rate_of(heard_rate, backend.sample_rate)

    def run(batches: List[Tuple[List[Tuple[str, int]], Any]]) -> Iterator[Outcome]:
        for keys, batch in batches:
            rate = keys[0][1]   # every input of a batch has this rate's fill, or none has
            for (key, heard), embedding in zip(keys, backend.embed(batch, rate)):
                if np.isfinite(embedding).all():
                    yield Outcome(key, embedding, heard_rate=heard)
                else:
                    yield Outcome(key, None, NON_FINITE_EMBEDDING,
                                  "the model gave a NaN or infinite embedding", heard)

    def outcomes() -> Iterator[Outcome]:
        for key, audio in items:
            heard = heard_rate
            if read is not None:
                try:
                    audio, came_at = read(audio)
                except AudioInputError as error:
                    yield Outcome(key, None, error.reason, str(error))
                    continue
                heard = heard_rate_of(came_at, backend.sample_rate)
            if heard:
                _warn_if_unfilled(backend, heard, key)
            prepared = backend.prepare(audio, heard)
            if backend.is_too_short(prepared):
                yield Outcome(key, None, TOO_SHORT_FOR_MODEL,
                              f"{len(audio) / backend.sample_rate:.3f} s of audio "
                              f"({len(audio)} samples); the model needs at least "
                              f"{backend.min_seconds:.3f} s ({backend.min_samples})", heard)
                continue
            # an ONNX graph fills a batch in one way: inputs that a fill is for batch apart
            group = heard if backend.band_fill_for(heard) is not None else 0
            yield from run(buckets.add((key, heard), prepared, group=group))
        yield from run(buckets.drain())

    if total is None and isinstance(items, Sized):
        total = len(items)
    # moved per outcome, not per input read: every input gives exactly one outcome
    bar = progress_bar(total=total, desc=desc, unit="utt", position=position,
                       enabled=progress)
    try:
        for outcome in outcomes():
            bar.update(1)
            yield outcome
    finally:
        bar.close()


def _warn_if_unfilled(backend: Backend, heard_rate: int, key: str) -> None:
    why = backend.missing_band_fill(heard_rate)
    if why:
        warn_if_narrowband(heard_rate, backend.sample_rate, key, why)
