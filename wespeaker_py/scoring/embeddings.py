"""What scoring derives from a set of embeddings: the mean vector, per-speaker means.

The embeddings themselves are read and written by :mod:`wespeaker_py.io.ark`.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from wespeaker_py.io.ark import EmbeddingTable, load_embeddings, write_embeddings
from wespeaker_py.scoring.trials import MissingEmbeddingsError
from wespeaker_py.utils.file_utils import DataFormatError, atomic_path, iter_table
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)


def compute_mean_vector(table: EmbeddingTable) -> np.ndarray:
    """Mean embedding of a set (accumulated in float64, returned as float32)."""
    if len(table) == 0:
        raise DataFormatError(table.source, None, "holds no embeddings to average")
    return table.matrix.mean(axis=0, dtype=np.float64).astype(np.float32)


def save_mean_vector(path: str, mean_vec: np.ndarray) -> None:
    """Save a mean vector as ``.npy`` atomically (the ``mean_vec.npy`` of a set)."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(mean_vec, dtype=np.float32))


def load_mean_vector(path: str, dim: Optional[int] = None) -> np.ndarray:
    """Load ``mean_vec.npy``, checking it is a finite vector of ``dim`` values."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"mean vector file {path} does not exist")
    mean_vec = np.load(path)
    if mean_vec.ndim != 1 or (dim is not None and mean_vec.shape[0] != dim):
        raise DataFormatError(path, None, f"mean vector has shape {mean_vec.shape}, "
                                          f"expected ({dim},)")
    if not np.all(np.isfinite(mean_vec)):
        raise DataFormatError(path, None, "mean vector contains NaN or inf")
    return mean_vec.astype(np.float32)


def read_spk2utt(path: str) -> List[Tuple[int, str, List[str]]]:
    """Read ``spk2utt`` as ``(line_no, speaker, utterances)`` in file order."""
    entries = []
    seen = set()
    for line_no, fields in iter_table(path, min_fields=2):
        speaker = fields[0]
        if speaker in seen:
            raise DataFormatError(path, line_no, f"speaker {speaker!r} appears twice")
        seen.add(speaker)
        entries.append((line_no, speaker, fields[1:]))
    return entries


def compute_speaker_means(table: EmbeddingTable, spk2utt_path: str,
                          max_missing_fraction: float = 0.0,
                          fraction_flag: str = "--max_missing_fraction"
                          ) -> Tuple[List[str], np.ndarray]:
    """Per-speaker mean embeddings (the ``spk_xvector`` cohort) in ``spk2utt`` order.

    Utterances of ``spk2utt`` without an embedding (what extraction skipped) are left out
    of their speaker's mean, and a speaker left with none out of the cohort, both logged;
    more than ``max_missing_fraction`` of the utterances missing (by default any) raises
    :class:`~wespeaker_py.scoring.trials.MissingEmbeddingsError` naming the first and
    ``fraction_flag``, the command's flag that sets the fraction.
    """
    if not 0.0 <= max_missing_fraction <= 1.0:
        raise ValueError(f"max_missing_fraction must be in [0, 1], got {max_missing_fraction}")
    speakers: List[str] = []
    means = []
    missing: List[Tuple[int, str]] = []
    total = 0
    for line_no, speaker, utts in read_spk2utt(spk2utt_path):
        rows = [table.index[utt] for utt in utts if utt in table.index]
        missing += [(line_no, utt) for utt in utts if utt not in table.index]
        total += len(utts)
        if rows:
            speakers.append(speaker)
            means.append(table.matrix[rows].mean(axis=0, dtype=np.float64))
        else:
            logger.warning("%s:%d: speaker %r left out of the cohort: none of its utterances "
                           "has an embedding in %s", spk2utt_path, line_no, speaker,
                           table.source)
    if missing:
        line_no, utt = missing[0]
        described = (f"{spk2utt_path}: {len(missing)} of {total} utterances have no embedding "
                     f"in {table.source} (the first, line {line_no}: {utt!r})")
        if len(missing) > max_missing_fraction * total or not means:
            raise MissingEmbeddingsError(
                f"{described}; that is more than {fraction_flag} "
                f"{max_missing_fraction:g} allows, so nothing was written (extraction logs "
                f"why these utterances were skipped)")
        logger.warning("%s; their speakers' means are taken without them", described)
    matrix = np.stack(means).astype(np.float32) if means else \
        np.zeros((0, table.dim), dtype=np.float32)
    return speakers, matrix


def write_speaker_means(spk2utt_path: str, xvector_scp: str, spk_xvector_ark: str,
                        max_missing_fraction: float = 0.0,
                        fraction_flag: str = "--max_missing_fraction") -> str:
    """Average each speaker's embeddings into ``spk_xvector.ark`` + ``.scp`` (see
    :func:`compute_speaker_means`); return the scp."""
    table = load_embeddings(xvector_scp)
    speakers, matrix = compute_speaker_means(table, spk2utt_path, max_missing_fraction,
                                             fraction_flag)
    return write_embeddings(spk_xvector_ark, speakers, matrix)
