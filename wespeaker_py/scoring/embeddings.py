"""Speaker embeddings in Kaldi ark/scp form, held as one float32 matrix plus a key index.

Every reader validates what it loads: a non-finite value, a wrong shape or a
repeated key is reported with the file (and scp line) and the utterance key, so a
broken extraction never turns silently into wrong scores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np
from tqdm import tqdm

from wespeaker_py.inference.writer import open_embedding_writer, scp_path_for
from wespeaker_py.utils.file_utils import DataFormatError, atomic_path, iter_table


@dataclass
class EmbeddingTable:
    """Embeddings of one set: ``matrix[index[key]]`` is the embedding of ``key``."""

    keys: List[str]
    matrix: np.ndarray
    source: str
    index: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {key: row for row, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def _as_vector(vector: np.ndarray, key: str, path: str, line_no: Optional[int],
               dim: Optional[int]) -> np.ndarray:
    vector = np.asarray(vector)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1:
        raise DataFormatError(path, line_no,
                              f"embedding {key!r} has shape {vector.shape}, expected a vector")
    if dim is not None and vector.shape[0] != dim:
        raise DataFormatError(path, line_no, f"embedding {key!r} has dimension "
                                             f"{vector.shape[0]}, the others have {dim}")
    return vector


def _iter_scp(path: str) -> Iterator[Tuple[str, Optional[int], np.ndarray]]:
    """Yield ``(key, scp line, vector)`` reading arks through a cache of open files."""
    open_files: Dict[str, object] = {}
    try:
        for line_no, fields in iter_table(path, min_fields=2, max_fields=2):
            key, spec = fields
            try:
                vector = kaldiio.load_mat(spec, fd_dict=open_files)
            except Exception as error:  # kaldiio raises many types for a bad offset/file
                raise DataFormatError(path, line_no,
                                      f"cannot read embedding {key!r} from {spec!r}: {error}"
                                      ) from error
            yield key, line_no, vector
    finally:
        for handle in open_files.values():
            handle.close()


def _iter_ark(path: str) -> Iterator[Tuple[str, Optional[int], np.ndarray]]:
    for key, vector in kaldiio.load_ark(path):
        yield key, None, vector


def load_embeddings(path: str, keys: Optional[Iterable[str]] = None,
                    progress: bool = False) -> EmbeddingTable:
    """Load ``xvector.scp`` (or a bare ``.ark``) into an :class:`EmbeddingTable`.

    With ``keys`` only those utterances are kept (a Kaldi table is read
    sequentially, so the others are still read). Raises :class:`DataFormatError`
    naming file, scp line and key for a non-finite value in a kept embedding, a
    dimension that differs from the others or a repeated key.
    """
    wanted = set(keys) if keys is not None else None
    reader = _iter_ark(path) if path.endswith(".ark") else _iter_scp(path)
    names: List[str] = []
    line_numbers: List[Optional[int]] = []
    rows: List[np.ndarray] = []
    seen = set()
    dim: Optional[int] = None
    for key, line_no, vector in tqdm(reader, desc=f"loading {os.path.basename(path)}",
                                     disable=not progress, unit="emb"):
        vector = _as_vector(vector, key, path, line_no, dim)
        dim = vector.shape[0]
        if key in seen:
            raise DataFormatError(path, line_no, f"embedding {key!r} appears twice")
        seen.add(key)
        if wanted is None or key in wanted:
            names.append(key)
            line_numbers.append(line_no)
            rows.append(vector.astype(np.float32, copy=False))
    if dim is None:
        raise DataFormatError(path, None, "holds no embeddings")
    matrix = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DataFormatError(path, line_numbers[bad],
                              f"embedding {names[bad]!r} contains NaN or inf")
    return EmbeddingTable(keys=names, matrix=matrix, source=path)


def write_embeddings(ark_path: str, keys: Sequence[str], matrix: np.ndarray) -> str:
    """Write one float32 vector per key as a binary Kaldi ark plus its scp, atomically.

    The scp (beside the ark, same stem) names the absolute ark path, so it stays
    valid from any working directory; both appear only once complete. Returns
    the scp path.
    """
    if len(keys) != len(matrix):
        raise ValueError(f"{len(keys)} keys for {len(matrix)} embeddings")
    with open_embedding_writer(ark_path) as writer:
        for key, vector in zip(keys, matrix):
            writer.write(key, vector)
    return scp_path_for(os.path.abspath(ark_path))


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


def compute_speaker_means(table: EmbeddingTable, spk2utt_path: str
                          ) -> Tuple[List[str], np.ndarray]:
    """Per-speaker mean embeddings (the ``spk_xvector`` cohort) in ``spk2utt`` order.

    An utterance of ``spk2utt`` without an embedding is an error naming the line.
    """
    speakers: List[str] = []
    means = []
    for line_no, speaker, utts in read_spk2utt(spk2utt_path):
        rows = []
        for utt in utts:
            row = table.index.get(utt)
            if row is None:
                raise DataFormatError(spk2utt_path, line_no,
                                      f"utterance {utt!r} has no embedding in {table.source}")
            rows.append(row)
        speakers.append(speaker)
        means.append(table.matrix[rows].mean(axis=0, dtype=np.float64))
    matrix = np.stack(means).astype(np.float32) if means else \
        np.zeros((0, table.dim), dtype=np.float32)
    return speakers, matrix


def write_speaker_means(spk2utt_path: str, xvector_scp: str, spk_xvector_ark: str) -> str:
    """Average each speaker's embeddings into ``spk_xvector.ark`` + ``.scp``; return the scp."""
    table = load_embeddings(xvector_scp)
    speakers, matrix = compute_speaker_means(table, spk2utt_path)
    return write_embeddings(spk_xvector_ark, speakers, matrix)
