"""Embeddings scaled to unit length: the one NumPy form, cheap to import (NumPy only).

Diarization, the speaker gallery and :meth:`~wespeaker_py.api.model.SpeakerModel.unit`
use :func:`unit_rows`; cosine scoring on a torch device uses its twin,
:func:`wespeaker_py.scoring.cosine.length_normalize`, with the same floor
(:data:`MIN_NORM`). Callers that refuse a row of no direction check it themselves,
with their own message, before calling.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

# the shortest length a vector may have and still have a direction: torch.nn.functional.
# normalize's eps, below which cosine scoring cannot make a row unit length (an all-zero
# row would score 0 against everything). A Python float, not a NumPy one, so that a
# float32 row divided by it stays float32.
MIN_NORM = 1e-12


def row_norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean length of each row of a matrix ``[N, E]`` as a column ``[N, 1]``; of a
    single vector ``[E]``, as ``[1]``. Computed in the dtype of ``rows``."""
    rows = np.asarray(rows)
    if rows.ndim not in (1, 2):
        raise ValueError(f"rows of shape {rows.shape}: expected a vector or a matrix")
    # one vector: numpy's whole-array norm (a dot product), as SpeakerModel.unit checks it
    return np.linalg.norm(rows, axis=1 if rows.ndim == 2 else None, keepdims=True)


def unit_rows(rows: np.ndarray, dtype: Optional[np.dtype] = np.float64) -> np.ndarray:
    """Rows of ``rows`` (a matrix ``[N, E]`` or one vector ``[E]``) scaled to unit length,
    computed and returned in ``dtype`` (None: the dtype of ``rows``, as NumPy's division
    gives it, so float32 stays float32). A row shorter than :data:`MIN_NORM` is divided
    by that floor instead: a zero row stays zero."""
    rows = np.asarray(rows, dtype=dtype)
    return rows / np.maximum(row_norms(rows), MIN_NORM)
