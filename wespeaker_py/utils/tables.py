"""Reading and writing Kaldi-style text tables (``wav.scp``, ``utt2spk``, trial lists, ...).

Every parser here reports problems as :class:`DataFormatError` naming the file
and the 1-based line number, so a broken list never fails with a bare
``IndexError`` deep inside a job.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.paths import require_input_file


class DataFormatError(WespeakerError, ValueError):
    """A data or list file has a malformed line; the message names file and line."""

    def __init__(self, path: str, line_no: Optional[int], reason: str):
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line_no = line_no
        self.reason = reason

    def __reduce__(self):
        # lets the error travel back from worker processes intact
        return (DataFormatError, (self.path, self.line_no, self.reason))


def _not_utf8_error(path: str) -> Optional[DataFormatError]:
    """The :class:`DataFormatError` for the first byte of ``path`` that is not UTF-8, naming
    its line (counted as a text read counts them) and column; None when there is none."""
    line_no, column = 1, 0
    # "surrogateescape" turns each byte that is not UTF-8 into one lone surrogate
    with open(path, "r", encoding="utf-8-sig", errors="surrogateescape") as handle:
        while True:
            piece = handle.readline(1 << 16)   # a binary "line" may be the whole file
            if not piece:
                return None
            bad = re.search("[\udc80-\udcff]", piece)
            if bad is not None:
                return DataFormatError(
                    path, line_no,
                    f"not UTF-8 text (byte 0x{ord(bad.group()) - 0xdc00:02x} at column "
                    f"{column + bad.start() + 1}): a binary file, or text in another "
                    f"encoding (save it as UTF-8)")
            if piece.endswith("\n"):
                line_no, column = line_no + 1, 0
            else:
                column += len(piece)


class _TableFile(io.TextIOWrapper):
    """A table file open as UTF-8 text; a decoding failure inside its ``with`` block
    becomes the :class:`DataFormatError` of :func:`_not_utf8_error`."""

    def __init__(self, path: str):
        super().__init__(open(path, "rb"), encoding="utf-8-sig")
        self.path = path

    def __exit__(self, kind, error, traceback) -> bool:
        super().__exit__(kind, error, traceback)
        if isinstance(error, UnicodeDecodeError):
            located = _not_utf8_error(self.path)
            if located is not None:
                raise located from None
        return False


def open_table(path: str) -> IO[str]:
    """Open a Kaldi table or list file for reading, as UTF-8 text.

    A byte-order mark (written by some Windows editors) is dropped: it would become
    part of the first key and fail to match that key anywhere else. Text that is not
    UTF-8 (another encoding, a binary file), read in the ``with`` block of the file,
    raises :class:`DataFormatError` naming the file, the line and the column.
    """
    return _TableFile(path)


def iter_table(path: str, min_fields: int = 1,
               max_fields: Optional[int] = None) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(line_no, fields)`` for each non-blank line of a whitespace table.

    Raises :class:`DataFormatError` when a line has fewer than ``min_fields``
    or more than ``max_fields`` fields.
    """
    with open_table(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise DataFormatError(
                    path, line_no,
                    f"expected at least {min_fields} fields, got {len(fields)}: {line.strip()!r}")
            if max_fields is not None and len(fields) > max_fields:
                raise DataFormatError(
                    path, line_no,
                    f"expected at most {max_fields} fields, got {len(fields)}: {line.strip()!r}")
            yield line_no, fields


class UniqueKeys:
    """Remembers the line of each key of a list, so that a repeat names both lines."""

    def __init__(self, path: str, what: str = "key"):
        self.path = path
        self.what = what
        self.first_line: Dict[str, int] = {}

    def claim(self, key: str, line_no: int) -> None:
        """Record ``key`` at ``line_no``; a key seen on another line is a
        :class:`DataFormatError`."""
        first = self.first_line.setdefault(key, line_no)
        if first != line_no:
            raise DataFormatError(self.path, line_no,
                                  f"duplicate {self.what} {key!r}, already on line {first}")


def iter_key_rest(path: str, expected: str = "'<key> <value>'"
                  ) -> Iterator[Tuple[int, str, str]]:
    """Yield ``(line_no, key, rest)`` for each non-blank line: the first field, and the rest
    of the line stripped (a path with spaces, a pipe command, an ark location). A line of
    one field is a :class:`DataFormatError` saying it ``expected`` that."""
    with open_table(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2:
                raise DataFormatError(path, line_no,
                                      f"expected {expected}, got {line.strip()!r}")
            yield line_no, parts[0], parts[1]


def read_key_value(path: str, allow_spaces_in_value: bool = True) -> Dict[str, str]:
    """Read a Kaldi two-column table (``wav.scp``, ``utt2spk``, ...) into a dict.

    With ``allow_spaces_in_value`` the value is the rest of the line (as in a
    ``wav.scp`` holding a pipe command). A repeated key is an error naming both lines.
    """
    table: Dict[str, str] = {}
    keys = UniqueKeys(path)
    for line_no, key, value in iter_key_rest(path):
        if not allow_spaces_in_value and len(value.split()) > 1:
            raise DataFormatError(path, line_no, f"expected '<key> <value>', got "
                                                 f"{key + ' ' + value!r}")
        keys.claim(key, line_no)
        table[key] = value
    return table


def read_wav_scp(path: str) -> Dict[str, str]:
    """Read a Kaldi ``wav.scp`` (``key path-or-pipe`` a line), checked whole before any work.

    The file must exist and hold at least one entry; a malformed line, or a key
    given twice (both lines named), is a :class:`DataFormatError`.
    """
    require_input_file(path, "wav.scp")
    table = read_key_value(path)
    if not table:
        raise DataFormatError(path, None, "the list is empty")
    return table


def read_lines(path: str) -> List[str]:
    """Return the non-blank, stripped lines of a text file."""
    with open_table(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def resolve_wav(wav: str, base_dir: str) -> str:
    """A ``wav.scp`` entry with a relative path made absolute against ``base_dir``.

    Pipe commands (``... |``) and absolute paths are returned unchanged: a command
    is not a path, and joining a folder to it would break it.
    """
    # wespeaker_py.audio imports this module, so it cannot be imported at the top
    from wespeaker_py.audio import is_pipe  # noqa: PLC0415

    if is_pipe(wav) or os.path.isabs(wav):
        return wav
    return os.path.join(os.path.abspath(base_dir), wav)


def write_table(path: str, rows: Iterable[Sequence[str]]) -> None:
    """Write a Kaldi table atomically as UTF-8: each row's fields joined by one space,
    one row a line (``wav.scp``, ``utt2spk``, ``utt2dur``, ...).

    ``rows`` may be a generator; when it raises, ``path`` is left as it was. A field
    holding a line break is a ``ValueError`` (it would split the row in two).
    """
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            line = " ".join(row)
            if "\n" in line or "\r" in line:
                raise ValueError(f"{path}: a table field holds a line break: {line!r}")
            handle.write(line + "\n")


def table_digest(rows: Iterable[Sequence[str]]) -> str:
    """SHA-256 of the file :func:`write_table` writes for ``rows`` (fields joined by one
    space, a line each, UTF-8), without writing it."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update((" ".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def write_utt2dur(path: str, durations: Iterable[Tuple[str, float]]) -> None:
    """Write ``utt seconds`` lines (4 decimals), in the order given, atomically."""
    write_table(path, ((utt, f"{seconds:.4f}") for utt, seconds in durations))


def read_utt2dur(path: str, max_dur: float = math.inf) -> Dict[str, float]:
    """``utt2dur`` as a dict of seconds, each capped at ``max_dur`` (errors name the line)."""
    if not max_dur > 0:   # NaN too: every duration would become it
        raise ValueError(f"max_dur must be a number of seconds > 0, got {max_dur}")
    durations = {}
    utterances = UniqueKeys(path, "utterance")
    for line_no, fields in iter_table(path, min_fields=2, max_fields=2):
        try:
            duration = float(fields[1])
        except ValueError:
            raise DataFormatError(path, line_no,
                                  f"duration {fields[1]!r} is not a number") from None
        if not 0 <= duration < math.inf:
            raise DataFormatError(path, line_no, f"duration {fields[1]!r} is not valid")
        utterances.claim(fields[0], line_no)
        durations[fields[0]] = min(duration, max_dur)
    return durations
