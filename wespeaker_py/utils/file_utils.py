"""Reading Kaldi-style text tables and writing files atomically.

Every parser here reports problems as :class:`DataFormatError` naming the file
and the 1-based line number, so a broken list never fails with a bare
``IndexError`` deep inside a job.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Dict, Iterator, List, Optional, Tuple


class DataFormatError(ValueError):
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


def iter_table(path: str, min_fields: int = 1,
               max_fields: Optional[int] = None) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(line_no, fields)`` for each non-blank line of a whitespace table.

    Raises :class:`DataFormatError` when a line has fewer than ``min_fields``
    or more than ``max_fields`` fields.
    """
    with open(path, "r", encoding="utf-8") as handle:
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


def read_key_value(path: str, allow_spaces_in_value: bool = True) -> Dict[str, str]:
    """Read a Kaldi two-column table (``wav.scp``, ``utt2spk``, ...) into a dict.

    With ``allow_spaces_in_value`` the value is the rest of the line (as in a
    ``wav.scp`` holding a pipe command). A repeated key is an error.
    """
    table: Dict[str, str] = {}
    with open(path, "r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1) if allow_spaces_in_value else line.split()
            if len(parts) != 2:
                raise DataFormatError(path, line_no, f"expected '<key> <value>', got {line!r}")
            key, value = parts
            if key in table:
                raise DataFormatError(path, line_no, f"duplicate key {key!r}")
            table[key] = value
    return table


def read_lines(path: str) -> List[str]:
    """Return the non-blank, stripped lines of a text file."""
    with open(path, "r", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _new_temp_file(path: str) -> str:
    """Create an empty temporary file beside ``path`` with the permissions a plain open gives."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + ".",
                                    dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs should follow the umask
    return tmp_path


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it into place on success.

    Readers never see a half-written file: on an exception the temporary file
    is removed and ``path`` is left as it was.
    """
    tmp_path = _new_temp_file(path)
    try:
        with open(tmp_path, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Give a temporary path beside ``path`` to write with any library; rename on success.

    Use it for writers that want a file name rather than a handle
    (``torch.save``, ``kaldiio.WriteHelper``, ``np.save``).
    """
    tmp_path = _new_temp_file(path)
    # keep the suffix so libraries that look at it (np.save adds ".npy") behave
    ext = os.path.splitext(path)[1]
    tmp_named = tmp_path + ext
    os.replace(tmp_path, tmp_named)
    try:
        yield tmp_named
        os.replace(tmp_named, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_named)
        raise
