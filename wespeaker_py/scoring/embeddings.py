"""What scoring derives from a set of embeddings: the mean vector, per-speaker means.

The embeddings themselves are read and written by :mod:`wespeaker_py.io.ark`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from wespeaker_py.io.ark import (EmbeddingTable, iter_embedding_blocks, load_embeddings,
                                 write_embeddings)
from wespeaker_py.scoring.trials import MissingEmbeddingsError
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.tables import DataFormatError, UniqueKeys, iter_table
from wespeaker_py.utils.utt2spk import iter_utt2spk

logger = get_logger(__name__)

MEAN_CHUNK = 16384


def mean_of_embeddings(path: str, progress: bool = False) -> np.ndarray:
    """Mean embedding of a set, as float32: bit for bit
    ``load_embeddings(path).matrix.mean(axis=0, dtype=np.float64)``, but read block by
    block (:func:`~wespeaker_py.io.ark.iter_embedding_blocks`, with every check of
    ``load_embeddings``) instead of into one matrix: the memory of one block, not of the set.

    The float64 sum starts at zero and adds the vectors in file order, as numpy's
    reduction over the rows of a matrix does.
    """
    total: Optional[np.ndarray] = None
    count = 0
    for block in iter_embedding_blocks(path, progress=progress):
        if total is None:
            total = np.zeros(block.matrix.shape[1], dtype=np.float64)
        for row in block.matrix:
            total += row
        count += len(block.keys)
    return (total / count).astype(np.float32)


def save_mean_vector(path: str, mean_vec: np.ndarray) -> None:
    """Save a mean vector as ``.npy`` atomically (the ``mean_vec.npy`` of a set)."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(mean_vec, dtype=np.float32))


def load_mean_vector(path: str, dim: Optional[int] = None) -> np.ndarray:
    """Load ``mean_vec.npy``, checking it is a finite vector of ``dim`` values (the one
    reader of mean vectors: scoring, export, and a model's own); a file that is not one
    is a :class:`DataFormatError` naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"mean vector file {path} does not exist")
    not_one = DataFormatError(path, None, "not a mean vector (an .npy file of numbers, as "
                                          "np.save writes one)")
    try:
        mean_vec = np.load(path, allow_pickle=False)
    except (EOFError, ValueError):   # not .npy: text, a pickle, an empty or cut file
        raise not_one from None
    if not isinstance(mean_vec, np.ndarray):   # an .npz archive
        mean_vec.close()
        raise not_one
    if mean_vec.dtype.kind not in "fiu":
        raise not_one
    if mean_vec.ndim != 1 or (dim is not None and mean_vec.shape[0] != dim):
        expected = "a vector" if dim is None else f"({dim},)"
        raise DataFormatError(path, None, f"mean vector has shape {mean_vec.shape}, "
                                          f"expected {expected}")
    if not np.all(np.isfinite(mean_vec)):
        raise DataFormatError(path, None, "mean vector contains NaN or inf")
    return mean_vec.astype(np.float32)


SpeakerList = List[Tuple[int, str, List[str]]]


def read_spk2utt(path: str) -> SpeakerList:
    """Read ``spk2utt`` as ``(line_no, speaker, utterances)`` in file order."""
    speakers = UniqueKeys(path, "speaker")
    entries = []
    for line_no, fields in iter_table(path, min_fields=2):
        speakers.claim(fields[0], line_no)
        entries.append((line_no, fields[0], fields[1:]))
    return entries


def read_utt2spk(path: str) -> SpeakerList:
    """Read ``utt2spk`` in the form of :func:`read_spk2utt`: ``(line_no, speaker, [utt])``,
    with the checks of :func:`~wespeaker_py.utils.utt2spk.iter_utt2spk`."""
    return [(line_no, spk, [utt]) for line_no, utt, spk in iter_utt2spk(path)]


@dataclass
class SpeakerRows:
    """The embeddings of each speaker of a speaker list, as rows of an embedding table."""

    speakers: List[str]   # those with at least one embedding, in the list's order
    rows: np.ndarray      # table rows used, ascending
    labels: np.ndarray    # each row's index into ``speakers``

    def counts(self) -> np.ndarray:
        """Number of embeddings of each speaker."""
        return np.bincount(self.labels, minlength=len(self.speakers))

    def take(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix[rows]``: the table's matrix itself when every row is used, in order."""
        if np.array_equal(self.rows, np.arange(len(matrix))):
            return matrix
        return matrix[self.rows]

    def means(self, vectors: np.ndarray) -> np.ndarray:
        """Each speaker's mean of ``vectors`` (one per row of :attr:`rows`), in float64.

        Summed chunk by chunk in speaker order, so no float64 copy of ``vectors`` is made.
        """
        sums = np.zeros((len(self.speakers), vectors.shape[1]))
        order = np.argsort(self.labels, kind="stable")
        for start in range(0, len(order), MEAN_CHUNK):
            chunk = order[start:start + MEAN_CHUNK]
            labels = self.labels[chunk]
            firsts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
            sums[labels[firsts]] += np.add.reduceat(vectors[chunk], firsts, axis=0,
                                                    dtype=np.float64)
        return sums / self.counts()[:, None]


def speaker_rows(table: EmbeddingTable, entries: SpeakerList, list_path: str,
                 max_missing_fraction: float = 0.0,
                 fraction_flag: str = "--max_missing_fraction") -> SpeakerRows:
    """Group the embeddings of ``table`` by the speakers of a list read from ``list_path``.

    ``entries`` is the list as :func:`read_spk2utt` or :func:`read_utt2spk` give it.
    Utterances of the list without an embedding (what extraction skipped) are left out,
    and a speaker left with none; more than ``max_missing_fraction`` of the utterances
    missing (by default any) raises
    :class:`~wespeaker_py.scoring.trials.MissingEmbeddingsError` naming the first and
    ``fraction_flag``, the command's flag that sets the fraction. Embeddings the list does
    not name are not used; one line logs the counts.
    """
    if not 0.0 <= max_missing_fraction <= 1.0:
        raise ValueError(f"max_missing_fraction must be in [0, 1], got {max_missing_fraction}")
    rows: List[int] = []
    labels: List[int] = []
    missing: List[Tuple[int, str]] = []
    first_line: Dict[str, int] = {}   # of every speaker of the list
    speaker_index: Dict[str, int] = {}  # of those with an embedding
    total = 0
    for line_no, speaker, utts in entries:
        first_line.setdefault(speaker, line_no)
        total += len(utts)
        found = [table.index[utt] for utt in utts if utt in table.index]
        missing += [(line_no, utt) for utt in utts if utt not in table.index]
        if found:
            rows += found
            labels += [speaker_index.setdefault(speaker, len(speaker_index))] * len(found)
    if not total:
        raise DataFormatError(list_path, None, "lists no utterances")
    if missing:
        line_no, utt = missing[0]
        described = (f"{list_path}: {len(missing)} of {total} utterances have no embedding "
                     f"in {table.source} (the first, line {line_no}: {utt!r})")
        # a fraction, as trials.keep_scorable_trials compares it: 0.29 * 100 rounds below 29
        if len(missing) / total > max_missing_fraction or not rows:
            raise MissingEmbeddingsError(
                f"{described}; that is more than {fraction_flag} "
                f"{max_missing_fraction:g} allows, so nothing was written (extraction logs "
                f"why these utterances were skipped)")
        logger.warning("%s; their speakers' means are taken without them", described)
        left_out = [f"{speaker!r} (line {line})" for speaker, line in first_line.items()
                    if speaker not in speaker_index]
        if left_out:
            logger.warning("%s: %d speaker(s) left out, none of their utterances has an "
                           "embedding: %s", list_path, len(left_out), listed_names(left_out))
    speakers = list(speaker_index)
    order = np.argsort(rows, kind="stable")
    grouped = SpeakerRows(speakers, np.asarray(rows, dtype=np.int64)[order],
                          np.asarray(labels, dtype=np.int64)[order])
    unused = len(table) - len(np.unique(grouped.rows))
    logger.info("%s: %d speakers from %d of %d embeddings of %s%s", list_path, len(speakers),
                len(grouped.rows), len(table), table.source,
                f" ({unused} not in the list, not used)" if unused else "")
    return grouped


def compute_speaker_means(table: EmbeddingTable, spk2utt_path: str,
                          max_missing_fraction: float = 0.0,
                          fraction_flag: str = "--max_missing_fraction"
                          ) -> Tuple[List[str], np.ndarray]:
    """Per-speaker mean embeddings (the ``spk_xvector`` cohort) in ``spk2utt`` order.

    Utterances without an embedding: see :func:`speaker_rows`.
    """
    grouped = speaker_rows(table, read_spk2utt(spk2utt_path), spk2utt_path,
                           max_missing_fraction, fraction_flag)
    return grouped.speakers, grouped.means(grouped.take(table.matrix)).astype(np.float32)


def write_speaker_means(spk2utt_path: str, xvector_scp: str, spk_xvector_ark: str,
                        max_missing_fraction: float = 0.0,
                        fraction_flag: str = "--max_missing_fraction") -> str:
    """Average each speaker's embeddings into ``spk_xvector.ark`` + ``.scp`` (see
    :func:`compute_speaker_means`); return the scp."""
    table = load_embeddings(xvector_scp)
    speakers, matrix = compute_speaker_means(table, spk2utt_path, max_missing_fraction,
                                             fraction_flag)
    return write_embeddings(spk_xvector_ark, speakers, matrix)
