"""The per-job parts of an extraction: resumable ark/scp pairs, and their merge.

Parts are appended to batch by batch (:func:`open_part_writer`), so that a
killed run leaves every finished embedding on disk, and the next run continues
after the last complete one; :func:`merge_embedding_arks` then writes the final
ark/scp atomically. The ark/scp format itself is :mod:`wespeaker_py.io.ark`.
"""
from __future__ import annotations

import contextlib
import os
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple

import kaldiio

from wespeaker_py.io.ark import (EmbeddingWriter, entry_end, open_embedding_writer,
                                 read_scp_offsets, scp_path_for, split_location)


def merge_embedding_arks(part_arks: Sequence[str], out_ark: str,
                         key_order: Optional[Sequence[str]] = None) -> int:
    """Concatenate per-job ark/scp pairs into ``out_ark`` and its scp; return the entry count.

    The vectors' bytes are copied (with ``key_order``, written again as the same
    float32), so the merged embeddings are bit-identical to the parts. A key found in
    two parts is an error. With ``key_order`` (the data list's keys) the entries are
    written in that order, keys it lacks after them in the parts' order
    (:func:`_write_in_order`).
    """
    with open_embedding_writer(out_ark) as writer:
        if key_order is None:
            for part in part_arks:
                writer.append_ark(part)
        else:
            _write_in_order(writer, part_arks, key_order)
    return writer.count


def _write_in_order(writer: EmbeddingWriter, part_arks: Sequence[str],
                    key_order: Sequence[str]) -> None:
    """Write the entries of ``part_arks`` sorted by their key's place in ``key_order``.

    Only the scps' offsets are held; the vectors are read one at a time and written
    as the float32 the parts hold, which gives their bytes back unchanged.
    """
    rank = {key: place for place, key in enumerate(key_order)}
    entries = [(key, part, offset) for part in part_arks
               for key, offset in read_scp_offsets(scp_path_for(part), expected_ark=part)]
    entries.sort(key=lambda entry: rank.get(entry[0], len(rank)))
    open_files: Dict[str, IO[bytes]] = {}
    try:
        for key, part, offset in entries:
            writer.write(key, kaldiio.load_mat(f"{part}:{offset}", fd_dict=open_files))
    finally:
        for handle in open_files.values():
            handle.close()


def _complete_scp_lines(scp_path: str) -> List[Tuple[str, int]]:
    """The newline-terminated lines of a part's scp (a killed writer may leave half a line),
    each with the size in bytes of the file up to its end."""
    if not os.path.exists(scp_path):
        return []
    with open(scp_path, "rb") as handle:
        data = handle.read()
    lines, start = [], 0
    while (newline := data.find(b"\n", start)) >= 0:
        lines.append((data[start:newline + 1].decode("utf-8", errors="replace"), newline + 1))
        start = newline + 1
    return lines


def recover_part(part_ark: str) -> List[str]:
    """Cut a part ark/scp back to its last complete embedding; return the keys it holds.

    An scp line is written only after the ark entry it names; a kill can still
    leave an entry without its line, half an entry, or half a line. Entries are
    checked from the end until one reads back whole; the ark is truncated after
    it and the scp cut back to the lines before it. Both are cut in place
    (``truncate``): that needs no free space and cannot be left half done, where
    rewriting the scp could lose every line on a full disk or a kill.
    """
    scp_path = scp_path_for(part_ark)
    lines = _complete_scp_lines(scp_path)
    ark_size = os.path.getsize(part_ark) if os.path.exists(part_ark) else 0
    end = 0
    while lines:
        key, _, location = lines[-1][0].strip().partition(" ")
        try:
            path, offset = split_location(location)
            if os.path.abspath(path) != os.path.abspath(part_ark):
                raise ValueError("points into another ark")
            end = entry_end(key, offset, kaldiio.load_mat(location))
            if end <= ark_size:
                break
        except Exception:  # noqa: BLE001 -- any failure to read back means "incomplete"
            pass
        lines.pop()
        end = 0
    with open(part_ark, "ab") as ark:
        ark.truncate(end)
    scp_end = lines[-1][1] if lines else 0
    if not os.path.exists(scp_path):
        open(scp_path, "wb").close()
    elif os.path.getsize(scp_path) != scp_end:
        os.truncate(scp_path, scp_end)
    return [line.split(maxsplit=1)[0] for line, _ in lines if line.strip()]


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
