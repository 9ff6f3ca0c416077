"""Embeddings as Kaldi ark/scp pairs: an atomic writer and a merger of per-job parts.

An ``xvector.ark`` holds binary Kaldi float vectors one after another; its
``xvector.scp`` maps each utterance key to ``<absolute ark path>:<byte offset>``.
Both files are written under temporary names and moved into place at the end,
and the scp always names the *final* ark, so a reader never sees an index that
points into a half-written or temporary archive.

The per-job *parts* of an extraction are different: they are appended to batch
by batch (:func:`open_part_writer`), so that a killed run leaves every finished
embedding on disk, and the next run continues after the last complete one.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from typing import IO, Iterable, Iterator, List, Sequence, Set, Tuple

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


def _entry_size(key: str, vector: np.ndarray) -> int:
    buffer = io.BytesIO()
    kaldiio.save_ark(buffer, {key: np.asarray(vector, dtype=np.float32)})
    return len(buffer.getvalue())


def _complete_scp_lines(scp_path: str) -> List[str]:
    """The newline-terminated lines of a part's scp (a killed writer may leave half a line)."""
    if not os.path.exists(scp_path):
        return []
    with open(scp_path, "r", encoding="utf-8", errors="replace") as handle:
        return [line for line in handle if line.endswith("\n") and line.strip()]


def recover_part(part_ark: str) -> List[str]:
    """Cut a part ark/scp back to its last complete embedding; return the keys it holds.

    An scp line is written only after the ark entry it names; a kill can still
    leave an entry without its line, half an entry, or half a line. Entries are
    checked from the end until one reads back whole; the ark is truncated after
    it and the scp rewritten to the lines before it.
    """
    scp_path = scp_path_for(part_ark)
    lines = _complete_scp_lines(scp_path)
    ark_size = os.path.getsize(part_ark) if os.path.exists(part_ark) else 0
    end = 0
    while lines:
        key, _, location = lines[-1].strip().partition(" ")
        path, _, offset = location.rpartition(":")
        try:
            if os.path.abspath(path) != os.path.abspath(part_ark):
                raise ValueError("points into another ark")
            vector = kaldiio.load_mat(location)
            end = int(offset) - len((key + " ").encode("utf-8")) + _entry_size(key, vector)
            if end <= ark_size:
                break
        except Exception:  # noqa: BLE001 -- any failure to read back means "incomplete"
            pass
        lines.pop()
        end = 0
    with open(part_ark, "ab") as ark:
        ark.truncate(end)
    with open(scp_path, "w", encoding="utf-8") as scp:
        scp.writelines(lines)
    return [line.split(maxsplit=1)[0] for line in lines]


@contextlib.contextmanager
def open_part_writer(part_ark: str) -> Iterator[EmbeddingWriter]:
    """Append to a resumable part ark/scp (created if absent), after :func:`recover_part`.

    The writer knows the keys already in the part and refuses to write them again,
    and hands each entry to the OS as it is written, so a kill loses nothing written.
    """
    part_ark = os.path.abspath(part_ark)
    done = recover_part(part_ark)
    with open(part_ark, "r+b") as ark_handle, \
            open(scp_path_for(part_ark), "a", encoding="utf-8") as scp_handle:
        ark_handle.seek(0, os.SEEK_END)
        yield EmbeddingWriter(ark_handle, scp_handle, part_ark, existing_keys=done,
                              flush_each=True)
