"""Embeddings in Kaldi ark/scp form (kaldiio): the one low-level reader and writer.

An ``xvector.ark`` holds binary Kaldi float vectors one after another; its
``xvector.scp`` maps each utterance key to ``<absolute ark path>:<byte offset>``.
Writing is atomic: both files are written under temporary names and moved into
place at the end, and the scp always names the *final* ark, so a reader never
sees an index that points into a half-written or temporary archive.

Reading validates what it loads: a non-finite value, a zero-length vector, a
wrong shape or a repeated key is reported with the file (and scp line) and the
utterance key, so a broken extraction never turns silently into wrong scores. Extraction
(:mod:`wespeaker_py.inference`) and scoring (:mod:`wespeaker_py.scoring`) both
use this module.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass, field
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import kaldiio
import numpy as np

# scp_path_for and its error: an archive's file names, read from here too
from wespeaker_py.io.layout import ArchiveNameError, scp_path_for  # noqa: F401
from wespeaker_py.utils.atomic_files import atomic_path
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError, iter_key_rest
# MIN_NORM: the shortest embedding loaded (with a direction to score)
from wespeaker_py.utils.vectors import MIN_NORM


def key_problem(key: str) -> Optional[str]:
    """Why ``key`` cannot be an utterance key of an ark/scp (None: it can)."""
    if not key:
        return "it is empty"
    if any(ch.isspace() for ch in key):
        return "it has whitespace (Kaldi tables split lines at whitespace)"
    return None


def ark_entry(key: str, vector: np.ndarray) -> Tuple[bytes, int]:
    """One ark entry as :class:`EmbeddingWriter` writes it (the vector stored as float32):
    its bytes, and where the vector's data starts in them -- what an scp offset points at,
    past the key and one space."""
    buffer = io.BytesIO()
    kaldiio.save_ark(buffer, {key: np.asarray(vector, dtype=np.float32)})
    return buffer.getvalue(), len((key + " ").encode("utf-8"))


def entry_end(key: str, data_offset: int, vector: np.ndarray) -> int:
    """The ark offset just past the entry of ``key`` whose data (``vector``, as read back)
    starts at ``data_offset`` (its scp offset)."""
    entry, data_start = ark_entry(key, vector)
    return data_offset - data_start + len(entry)


def split_location(location: str) -> Tuple[str, int]:
    """``(ark path, offset)`` of an scp location ``<ark>:<offset>``; ValueError for
    anything else."""
    path, sep, offset = location.rpartition(":")
    if not sep or not offset.isdigit():
        raise ValueError(f"expected '<ark>:<offset>', got {location!r}")
    return path, int(offset)


class EmbeddingWriter:
    """Append ``(key, vector)`` entries to an open ark and its scp index.

    Use :func:`open_embedding_writer`, which owns the files; this class only
    keeps offsets and keys consistent.
    """

    def __init__(self, ark_handle: IO[bytes], scp_handle: IO[str], final_ark_path: str,
                 existing_keys: Iterable[str] = (), flush_each: bool = False):
        self._ark = ark_handle
        self._scp = scp_handle
        self._ark_path = final_ark_path
        self._keys: Set[str] = set(existing_keys)
        # resumable parts: each entry reaches the OS, ark bytes before their scp line
        self._flush_each = flush_each

    @property
    def count(self) -> int:
        """Number of entries written so far."""
        return len(self._keys)

    def _claim(self, key: str, origin: str) -> None:
        problem = key_problem(key)
        if problem:
            raise ValueError(f"utterance key {key!r} from {origin}: {problem}")
        if key in self._keys:
            raise ValueError(f"utterance key {key!r} from {origin} occurs twice; "
                             f"keys must be unique in {self._ark_path}")
        self._keys.add(key)

    def write(self, key: str, vector: np.ndarray) -> None:
        """Write one embedding (stored as float32)."""
        self._claim(key, "the data list")
        entry, data_start = ark_entry(key, vector)
        data_offset = self._ark.tell() + data_start
        self._ark.write(entry)
        if self._flush_each:
            self._ark.flush()
        self._scp.write(f"{key} {self._ark_path}:{data_offset}\n")
        if self._flush_each:
            self._scp.flush()

    def append_ark(self, part_ark: str) -> None:
        """Copy a whole ark (and the entries of its scp) verbatim, shifting the offsets."""
        entries = read_scp_offsets(scp_path_for(part_ark), expected_ark=part_ark)
        base = self._ark.tell()
        with open(part_ark, "rb") as source:
            shutil.copyfileobj(source, self._ark, length=16 << 20)
        for key, offset in entries:
            self._claim(key, part_ark)
            self._scp.write(f"{key} {self._ark_path}:{base + offset}\n")


SCP_LINE = "'<key> <ark>:<offset>'"  # what an scp line holds, for errors


def read_scp_offsets(scp_path: str, expected_ark: str) -> List[Tuple[str, int]]:
    """``(key, offset)`` pairs of an scp whose entries must all point into ``expected_ark``."""
    expected = os.path.abspath(expected_ark)
    entries: List[Tuple[str, int]] = []
    for line_no, key, location in iter_key_rest(scp_path, SCP_LINE):
        try:
            path, offset = split_location(location)
        except ValueError:
            raise DataFormatError(scp_path, line_no,
                                  f"expected '<key> <ark>:<offset>', got {location!r}") from None
        if os.path.abspath(path) != expected:
            raise DataFormatError(scp_path, line_no,
                                  f"entry points into {path}, expected {expected}")
        entries.append((key, offset))
    return entries


@contextlib.contextmanager
def open_embedding_writer(ark_path: str) -> Iterator[EmbeddingWriter]:
    """Write ``ark_path`` and its scp atomically; the scp names the final absolute ark path.

    On success the new ark replaces the old one first, then the new scp appears;
    an old scp is removed just before, so an scp on disk never points into an ark
    it was not written for. On an exception nothing on disk changes.
    """
    ark_path = os.path.abspath(ark_path)
    scp_path = scp_path_for(ark_path)
    with atomic_path(scp_path) as tmp_scp, atomic_path(ark_path) as tmp_ark:
        with open(tmp_ark, "wb") as ark_handle, \
                open(tmp_scp, "w", encoding="utf-8") as scp_handle:
            yield EmbeddingWriter(ark_handle, scp_handle, ark_path)
            for handle in (ark_handle, scp_handle):
                handle.flush()
                os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.remove(scp_path)


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
        for line_no, key, spec in iter_key_rest(path, SCP_LINE):
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


# rows of one block of :func:`iter_embedding_blocks`
BLOCK_ROWS = 16384


@dataclass
class EmbeddingBlock:
    """Consecutive embeddings of a set as read: their keys, scp lines and rows (float32)."""

    keys: List[str]
    line_numbers: List[Optional[int]]
    matrix: np.ndarray


def iter_embedding_blocks(path: str, keys: Optional[Iterable[str]] = None,
                          progress: bool = False,
                          block_rows: Optional[int] = None) -> Iterator[EmbeddingBlock]:
    """``xvector.scp`` (or a bare ``.ark``) in blocks of up to ``block_rows`` embeddings, in
    file order (``block_rows`` None: :data:`BLOCK_ROWS`), checked as they are read; with
    ``keys``, only those utterances (the others are still read and checked for shape and
    repeats). The last block may be empty (it then still says the dimension, as
    ``matrix.shape[1]``).

    Raises :class:`DataFormatError` naming file, scp line and key for a wrong shape, a
    dimension that differs from the others, a repeated key or an empty set as it reads;
    for a non-finite value or a zero length (below :data:`MIN_NORM`) in a kept embedding,
    once every block was given, naming the first such embedding (a NaN one before a
    zero-length one), so that the same set is refused for the same fault whatever the block
    size and however the blocks are used.
    """
    wanted = set(keys) if keys is not None else None
    block_rows = block_rows or BLOCK_ROWS
    reader = _iter_ark(path) if path.endswith(".ark") else _iter_scp(path)
    seen: Set[str] = set()
    dim: Optional[int] = None
    block = EmbeddingBlock([], [], np.zeros((0, 0), dtype=np.float32))
    rows: List[np.ndarray] = []
    given = 0
    not_finite: Optional[Tuple[Optional[int], str]] = None   # (scp line, key) of the first
    too_short: Optional[Tuple[Optional[int], str]] = None

    def finished_block() -> EmbeddingBlock:
        nonlocal block, given, not_finite, too_short
        given += 1
        done = EmbeddingBlock(block.keys, block.line_numbers,
                              np.stack(rows) if rows else np.zeros((0, dim), np.float32))
        finite = np.isfinite(done.matrix).all(axis=1)
        if not_finite is None and not finite.all():
            bad = int(np.argmin(finite))
            not_finite = (done.line_numbers[bad], done.keys[bad])
        long_enough = np.einsum("ij,ij->i", done.matrix, done.matrix) >= MIN_NORM ** 2
        if too_short is None and not long_enough.all():
            bad = int(np.argmin(long_enough))
            too_short = (done.line_numbers[bad], done.keys[bad])
        block = EmbeddingBlock([], [], done.matrix[:0])
        rows.clear()
        return done

    for key, line_no, vector in progress_bar(reader, desc=f"loading {os.path.basename(path)}",
                                             enabled=progress, unit="emb"):
        vector = _as_vector(vector, key, path, line_no, dim)
        dim = vector.shape[0]
        if key in seen:
            raise DataFormatError(path, line_no, f"embedding {key!r} appears twice")
        seen.add(key)
        if wanted is None or key in wanted:
            block.keys.append(key)
            block.line_numbers.append(line_no)
            rows.append(vector.astype(np.float32, copy=False))
            if len(rows) == block_rows:
                yield finished_block()
    if dim is None:
        raise DataFormatError(path, None, "holds no embeddings")
    if rows or not given:
        yield finished_block()
    if not_finite is not None:
        raise DataFormatError(path, not_finite[0], f"embedding {not_finite[1]!r} contains NaN "
                                                   f"or inf")
    if too_short is not None:
        raise DataFormatError(path, too_short[0],
                              f"embedding {too_short[1]!r} has zero length (all zeros, or a "
                              f"norm below {MIN_NORM:g}): it has no direction to score")


def load_embeddings(path: str, keys: Optional[Iterable[str]] = None,
                    progress: bool = False) -> EmbeddingTable:
    """Load ``xvector.scp`` (or a bare ``.ark``) into an :class:`EmbeddingTable`.

    With ``keys`` only those utterances are kept (a Kaldi table is read
    sequentially, so the others are still read). Every check of
    :func:`iter_embedding_blocks` applies.
    """
    blocks = list(iter_embedding_blocks(path, keys, progress))
    names = [key for block in blocks for key in block.keys]
    matrix = blocks[0].matrix if len(blocks) == 1 else np.concatenate(
        [block.matrix for block in blocks])
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
