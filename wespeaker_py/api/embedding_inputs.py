"""What :meth:`~wespeaker_py.api.SpeakerModel.embed_many` takes and gives: its inputs (a
wav.scp, a mapping or a list) as ``(key, audio)`` pairs, and its results."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Tuple, Union

import numpy as np

from wespeaker_py.audio import AudioLike
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.tables import read_wav_scp

logger = get_logger(__name__)


@dataclass
class EmbeddingResults:
    """What :meth:`SpeakerModel.embed_many` produced: embeddings by key, skipped keys (with
    why), and the skips counted by reason (``missing_file``, ``too_short_for_model``, ...)."""

    embeddings: Dict[str, np.ndarray] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    # the embedded keys whose audio came below the model's rate, and that rate
    heard_rates: Dict[str, int] = field(default_factory=dict)


def items_of(items: Union[str, Iterable[AudioLike], Mapping[str, AudioLike]]
             ) -> List[Tuple[str, AudioLike]]:
    """``(key, audio)`` pairs of a wav.scp path, a mapping, or a list or any other iterable
    such as a generator (keys: paths or indices; a path listed again is the same key, and is
    embedded once).

    A wav.scp is read by :func:`~wespeaker_py.utils.tables.read_wav_scp`: one that is
    missing, empty or malformed raises its error, naming the file. ``bytes`` and a single
    1-D array or tensor (one recording, not a list of them) raise ``WespeakerError``; a 2-D
    array is an iterable of its rows, each one recording.
    """
    if isinstance(items, (str, os.PathLike)):
        return list(read_wav_scp(os.fspath(items)).items())
    if isinstance(items, Mapping):
        return [(str(key), audio) for key, audio in items.items()]
    if not isinstance(items, Iterable):
        raise WespeakerError(f"embed_many's items must be a wav.scp path, a mapping or an "
                             f"iterable of paths or arrays, got {type(items).__name__}")
    if isinstance(items, (bytes, bytearray)):
        raise WespeakerError(f"embed_many's items must be a wav.scp path, a mapping or an "
                             f"iterable of paths or arrays, got {type(items).__name__} (its "
                             f"bytes would each be an item): pass a wav.scp path as str")
    if len(getattr(items, "shape", ())) == 1:   # a NumPy array or torch tensor of samples
        raise WespeakerError(f"embed_many's items is one 1-D {type(items).__name__} of "
                             f"{items.shape[0]} values, which would make each sample an item: "
                             f"pass [array] to embed one recording, or use embed()")
    pairs = {}
    count = 0
    for index, item in enumerate(items):
        key = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(index)
        pairs.setdefault(key, item)
        count = index + 1
    if len(pairs) < count:
        logger.info("%d paths were listed more than once: each is embedded once, under its "
                    "path", count - len(pairs))
    return list(pairs.items())
