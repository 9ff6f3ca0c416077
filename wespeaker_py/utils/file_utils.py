"""Reading Kaldi-style text tables and writing files atomically.

Every parser here reports problems as :class:`DataFormatError` naming the file
and the 1-based line number, so a broken list never fails with a bare
``IndexError`` deep inside a job.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import os
import re
import shutil
import socket
import uuid
from typing import IO, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from wespeaker_py.errors import RunFailedError, WespeakerError


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


class InputFileError(WespeakerError, OSError):
    """An input file named on the command line is missing, a folder, or empty."""


def rate_in_name(template: str, name: str) -> Optional[int]:
    """The rate in a file name made from ``template`` (a ``{}`` for the rate:
    ``band_fill_{}hz.npz`` and ``band_fill_8000hz.npz`` give 8000); None for another name."""
    match = re.fullmatch(re.escape(template).replace(r"\{\}", r"([0-9]+)"), name)
    return int(match.group(1)) if match else None


def files_named_by_rate(prefix: str, template: str) -> List[str]:
    """The files ``prefix`` + ``template`` with anything in place of its ``{}`` (the files
    of :func:`rate_in_name`'s form beside a model, and any with a bad rate), sorted."""
    return sorted(glob.glob(glob.escape(prefix) + template.format("*")))


# what changes when a file is rewritten: (mtime in ns, size, inode)
FileStamp = Tuple[int, int, int]


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str) -> Optional[FileStamp]:
    """The file's :data:`FileStamp`; None when there is no file."""
    if not os.path.isfile(path):
        return None
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


def require_input_file(path: str, what: str = "") -> None:
    """Fail now, before any model loads, unless ``path`` is an existing, non-empty file.

    ``what`` (e.g. ``"wav.scp"``) starts the message when given.
    """
    name = f"{what} {path}" if what else str(path)
    if not os.path.exists(path):
        raise InputFileError(f"{name} does not exist")
    if os.path.isdir(path):
        raise InputFileError(f"{name} is a folder, not a file")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{name} is empty")


class OutputNotWritableError(WespeakerError, OSError):
    """An output cannot be written where it was asked for (found before any work)."""


def _folder_given_as_file(path: str) -> OutputNotWritableError:
    return OutputNotWritableError(f"{path} is a folder; give a file name")


def _nearest_existing(folder: str) -> str:
    """``folder`` (absolute), or its nearest ancestor that exists when it does not."""
    while True:
        try:
            os.stat(folder)
            return folder
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(folder)
            if parent == folder:
                return folder
            folder = parent
        except OSError:   # no permission, say: the test that follows names it
            return folder


def require_writable(path: str, folder_ok: bool = False) -> None:
    """Fail now, before any work, when the file ``path`` could not be written.

    An existing folder at ``path`` is refused, unless ``folder_ok`` (an output that
    may be a folder to write in; then writing in it is tested). A temporary file is
    created and removed in the nearest folder on the way that exists: the real test,
    which also holds for root and for read-only mounts. Missing folders are not made
    here, so a run that fails later leaves none behind; the writer makes them.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        if not folder_ok:
            raise _folder_given_as_file(path)
        target = os.path.join(target, "file")
    folder = _nearest_existing(os.path.dirname(target))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputNotWritableError(f"cannot write {path}: {folder} is not a folder")
    try:
        os.remove(_new_temp_file(os.path.join(folder, os.path.basename(target))))
    except OSError as error:
        raise OutputNotWritableError(f"cannot write {path}: {error.strerror or error} "
                                     f"(in {folder})") from None


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (links resolved; hard links too, where both exist)."""
    try:
        return os.path.samefile(first, second)
    except OSError:   # one does not exist (yet): compare where they would be
        return os.path.realpath(first) == os.path.realpath(second)


def refuse_output_over_input(outputs: Mapping[str, Optional[str]],
                             inputs: Mapping[str, Optional[str]]) -> None:
    """Fail now, before any work, when an output would replace an input.

    ``outputs`` and ``inputs`` map what names each path for the user (a flag such as
    ``--output``, or ``the scp beside --output``) to the path; None entries are passed
    over. The error names both, so that ``--output wav.ark`` beside ``--wav_scp wav.scp``
    cannot end with the list replaced by an index of embeddings.
    """
    for out_name, out_path in outputs.items():
        for in_name, in_path in inputs.items():
            if out_path and in_path and same_file(out_path, in_path):
                raise OutputNotWritableError(
                    f"{out_name} {out_path} is {in_name} ({in_path}): writing it would "
                    f"replace an input; choose another output path")


class DiskFullError(OSError, RunFailedError):
    """Writing an output failed because its file system is full (or over quota)."""

    def __init__(self, path: str, cause: OSError):
        super().__init__(cause.errno, f"no space left on device while writing {path}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):
        return (DiskFullError, (self.path, OSError(self.errno, self.strerror)))


_DISK_FULL_ERRNOS = frozenset([errno.ENOSPC, errno.EDQUOT])


def _disk_full_cause(error: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT ``OSError`` in ``error``'s chain, if there is one.

    Libraries that write through a Python file object (``torch.save``) raise
    their own error while the ``OSError`` sits in the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


# Temporary outputs are named ``.tmp_<name>.<host>-<pid>.<random>`` so that a later
# writer in the same directory can tell which ones a dead process left behind.
_TEMP_PREFIX = ".tmp_"
_TEMP_OWNER = re.compile(r"\.(?P<host>[^.]*)-(?P<pid>\d+)\.[^.]+(\.[^.]*)?$")


def _host_tag() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: str) -> List[str]:
    """Remove the temporary outputs in ``directory`` whose writing process has died.

    Only files this module names (``.tmp_<name>.<host>-<pid>.<random>``) and only
    those of this host whose process no longer exists are touched; a temporary
    file of a running writer, or of another machine sharing the directory, is
    left alone. Returns the removed paths.
    """
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host = _host_tag()
    for name in names:
        if not name.startswith(_TEMP_PREFIX):
            continue
        match = _TEMP_OWNER.search(name)
        if match is None or match.group("host") != host or _process_alive(int(match.group("pid"))):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
    return removed


def temp_name_for(path: str) -> str:
    """A fresh temporary name beside ``path`` that :func:`remove_stale_temp_files` recognises."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f"{_TEMP_PREFIX}{os.path.basename(path)}."
                                   f"{_host_tag()}-{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _new_temp_file(path: str, suffix: str = "") -> str:
    """Create an empty temporary file beside ``path`` with the permissions a plain open gives.

    Stale temporary files of dead writers in the same directory are removed first.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temp_files(directory)
    tmp_path = temp_name_for(path) + suffix
    umask = os.umask(0)
    os.umask(umask)
    # outputs follow the umask, as a plain open would
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask)
    os.close(fd)
    return tmp_path


def _move_into_place(tmp_path: str, path: str) -> None:
    """``os.replace(tmp_path, path)``; a folder at ``path`` is an error naming ``path``."""
    try:
        os.replace(tmp_path, path)
    except IsADirectoryError:
        raise _folder_given_as_file(path) from None


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (not every file system allows it)."""
    with contextlib.suppress(OSError):
        _fsync_path(directory)


def raise_if_disk_full(error: BaseException, path: str) -> None:
    """Raise :class:`DiskFullError` naming ``path`` when ``error`` comes from a full disk."""
    cause = _disk_full_cause(error)
    if cause is not None and not isinstance(error, DiskFullError):
        raise DiskFullError(path, cause) from error


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it into place on success.

    Readers never see a half-written file: the data is flushed to disk before the
    rename, and on an exception the temporary file is removed and ``path`` is left
    as it was. A full disk raises :class:`DiskFullError` naming ``path``.
    """
    tmp_path = _new_temp_file(path)
    try:
        with open(tmp_path, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _move_into_place(tmp_path, path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise_if_disk_full(error, path)
        raise


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Give a temporary path beside ``path`` to write with any library; rename on success.

    Use it for writers that want a file name rather than a handle
    (``kaldiio.WriteHelper``, ``np.save``; for ``torch.save`` use :func:`save_torch`,
    which reports a full disk clearly). The file is flushed to disk before the rename.
    """
    # keep the suffix so libraries that look at it (np.save adds ".npy") behave
    tmp_named = _new_temp_file(path, suffix=os.path.splitext(path)[1])
    try:
        yield tmp_named
        _fsync_path(tmp_named)
        _move_into_place(tmp_named, path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_named)
        raise_if_disk_full(error, path)
        raise


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Give a new temporary folder beside ``path`` to fill; rename it to ``path`` on success.

    ``path`` must not exist or be an empty folder (else :class:`FileExistsError`, before
    anything is written), so the folder appears complete or not at all. The temporary
    folder gets the permissions a plain mkdir gives; on an exception it is removed, and
    one a killed process left behind is named so that :func:`remove_stale_temp_files`
    removes it (as the next write beside it does). A full disk raises
    :class:`DiskFullError` naming ``path``.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path):
        raise FileExistsError(f"{path} exists and is not empty; choose a new directory")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temp_files(parent)
    tmp_dir = temp_name_for(path)
    os.mkdir(tmp_dir)
    try:
        yield tmp_dir
        os.replace(tmp_dir, path)   # replaces an empty folder
        _fsync_directory(parent)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp_dir)
        raise_if_disk_full(error, path)
        raise


def atomic_symlink(target: str, link: str) -> None:
    """Point the symbolic link ``link`` at ``target`` (as :func:`os.symlink` takes it: a
    relative ``target`` is relative to ``link``'s folder), replacing an earlier ``link`` in
    one rename: a reader finds the old link or the new one, never none."""
    tmp_link = temp_name_for(link)
    os.symlink(target, tmp_link)
    try:
        _move_into_place(tmp_link, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_link)
        raise


def save_torch(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically; a full disk raises :class:`DiskFullError`.

    torch writes through a Python file object here, so the file system's own
    error (ENOSPC) reaches us instead of torch's ``unexpected pos`` message.
    """
    import torch  # noqa: PLC0415 -- the text helpers above do not need torch

    with atomic_path(path) as tmp_path:
        with open(tmp_path, "wb") as handle:
            torch.save(obj, handle)
