"""Embeddings as Kaldi ark/scp pairs: an atomic writer and a merger of per-job parts.

An ``xvector.ark`` holds binary Kaldi float vectors one after another; its
``xvector.scp`` maps each utterance key to ``<absolute ark path>:<byte offset>``.
Both files are written under temporary names and moved into place at the end,
and the scp always names the *final* ark, so a reader never sees an index that
points into a half-written or temporary archive.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import IO, Iterator, List, Sequence, Set, Tuple

import kaldiio
import numpy as np

from wespeaker_py.utils.file_utils import DataFormatError, atomic_path, iter_table


def scp_path_for(ark_path: str) -> str:
    """The scp that indexes ``ark_path`` (``x/xvector.ark`` -> ``x/xvector.scp``)."""
    root, ext = os.path.splitext(ark_path)
    if ext != ".ark":
        raise ValueError(f"an embedding archive must end in '.ark', got {ark_path!r}")
    return root + ".scp"


class EmbeddingWriter:
    """Append ``(key, vector)`` entries to an open ark and its scp index.

    Use :func:`open_embedding_writer`, which owns the files; this class only
    keeps offsets and keys consistent.
    """

    def __init__(self, ark_handle: IO[bytes], scp_handle: IO[str], final_ark_path: str):
        self._ark = ark_handle
        self._scp = scp_handle
        self._ark_path = final_ark_path
        self._keys: Set[str] = set()

    @property
    def count(self) -> int:
        """Number of entries written so far."""
        return len(self._keys)

    def _claim(self, key: str, origin: str) -> None:
        if not key or any(ch.isspace() for ch in key):
            raise ValueError(f"utterance key {key!r} from {origin} is empty or has whitespace")
        if key in self._keys:
            raise ValueError(f"utterance key {key!r} from {origin} occurs twice; "
                             f"keys must be unique in {self._ark_path}")
        self._keys.add(key)

    def write(self, key: str, vector: np.ndarray) -> None:
        """Write one embedding (stored as float32)."""
        self._claim(key, "the data list")
        data_offset = self._ark.tell() + len((key + " ").encode("utf-8"))
        kaldiio.save_ark(self._ark, {key: np.asarray(vector, dtype=np.float32)})
        self._scp.write(f"{key} {self._ark_path}:{data_offset}\n")

    def append_ark(self, part_ark: str) -> None:
        """Copy a whole ark (and the entries of its scp) verbatim, shifting the offsets."""
        entries = read_scp_offsets(scp_path_for(part_ark), expected_ark=part_ark)
        base = self._ark.tell()
        with open(part_ark, "rb") as source:
            shutil.copyfileobj(source, self._ark, length=16 << 20)
        for key, offset in entries:
            self._claim(key, part_ark)
            self._scp.write(f"{key} {self._ark_path}:{base + offset}\n")


def read_scp_offsets(scp_path: str, expected_ark: str) -> List[Tuple[str, int]]:
    """``(key, offset)`` pairs of an scp whose entries must all point into ``expected_ark``."""
    expected = os.path.abspath(expected_ark)
    entries: List[Tuple[str, int]] = []
    for line_no, (key, location) in iter_table(scp_path, min_fields=2, max_fields=2):
        path, sep, offset = location.rpartition(":")
        if not sep or not offset.isdigit():
            raise DataFormatError(scp_path, line_no,
                                  f"expected '<key> <ark>:<offset>', got {location!r}")
        if os.path.abspath(path) != expected:
            raise DataFormatError(scp_path, line_no,
                                  f"entry points into {path}, expected {expected}")
        entries.append((key, int(offset)))
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


def merge_embedding_arks(part_arks: Sequence[str], out_ark: str) -> int:
    """Concatenate per-job ark/scp pairs into ``out_ark`` and its scp; return the entry count.

    The vectors' bytes are copied, not re-encoded, so the merged embeddings are
    bit-identical to the parts. A key found in two parts is an error.
    """
    with open_embedding_writer(out_ark) as writer:
        for part in part_arks:
            writer.append_ark(part)
    return writer.count
