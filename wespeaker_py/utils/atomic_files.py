"""Writing files so that nothing is ever written half: a temporary file beside the
output is renamed into place on success and removed on failure, and a full disk is a
:class:`DiskFullError` naming the output (:func:`require_writable` tries one before any work).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import time
import uuid
from typing import IO, Any, Callable, Iterator, List, Optional

from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.logging_utils import get_logger
from wespeaker_py.utils.paths import OutputNotWritableError

logger = get_logger(__name__)


class DiskFullError(OSError, RunFailedError):
    """Writing an output failed because its file system is full (or over quota); ``advice``:
    what to do then, when the writer knows (how to go on from what was written)."""

    def __init__(self, path: str, cause: OSError, advice: str = ""):
        super().__init__(cause.errno, f"no space left on device while writing {path}"
                         + (f"; {advice}" if advice else ""))
        self.path, self.cause, self.advice = path, cause, advice

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):
        return (DiskFullError, (self.path, OSError(self.cause.errno, self.cause.strerror),
                                self.advice))


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


# Temporary outputs are named ``.tmp_<name>.<host>-<pid>.<8 hex digits>[.<suffix>]`` so
# that a later writer in the same directory can tell which ones a dead process left
# behind (and leave alone files of other programs that merely start with ``.tmp_``).
_TEMP_PREFIX = ".tmp_"
_TEMP_OWNER = re.compile(r"\.(?P<host>[^.-]+)-(?P<pid>\d+)\.[0-9a-f]{8}(\.[^.]*)?$")

# A temporary file not modified for this long is a dead writer's, whatever host and pid
# its name gives (a rescheduled container has another host name; a fresh PID namespace
# gives the dead writer's pid to the next process). Every writer of this module writes
# its file as it goes (torch.save through a file object, np.save, tarfile, kaldiio,
# shutil.copyfile, the text outputs), each write setting the modification time; the
# longest quiet spell is a graph export's, whose file waits while the model is traced and
# the graph checked (minutes). Not for folders: writing the files in one does not change
# its time (a WorkerReports folder lives as long as its training run).
STALE_AFTER_SECONDS = 3600.0


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


def _why_abandoned(path: str, owner: re.Match, host: str, now: float) -> Optional[str]:
    """Why the temporary output ``path`` (``owner``: its name's host and pid) can have no
    live writer; None when it may have one."""
    pid = int(owner.group("pid"))
    if owner.group("host") == host and not _process_alive(pid):
        return f"its writer, process {pid} of this machine, has ended"
    try:
        info = os.lstat(path)
    except OSError:
        return None
    idle = now - info.st_mtime
    if stat.S_ISDIR(info.st_mode) or idle < STALE_AFTER_SECONDS:
        return None
    return f"not modified for {idle / 3600:.1f} hours"


def _bytes_under(path: str) -> int:
    """The size of the file ``path``, or of the files in the folder ``path``."""
    if not os.path.isdir(path) or os.path.islink(path):
        return os.lstat(path).st_size
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, names in os.walk(path) for name in names)


def size_text(num_bytes: float) -> str:
    """``num_bytes`` for a message: ``512 bytes``, ``8.4 MB``, ``7.0 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


def remove_stale_temp_files(directory: str) -> List[str]:
    """Remove the temporary outputs in ``directory`` that no live writer can own.

    Only entries this module names (``.tmp_<name>.<host>-<pid>.<random>``) are
    touched, and of them only those of this host whose process no longer exists, and files not
    modified for :data:`STALE_AFTER_SECONDS`, whatever their host and pid. A
    temporary output of a running writer, or a fresh one of another machine sharing
    the directory, is left alone. Each removal is logged with its size; returns the
    removed paths.
    """
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for name in names:
        match = _TEMP_OWNER.search(name) if name.startswith(_TEMP_PREFIX) else None
        path = os.path.join(directory, name)
        reason = None if match is None else _why_abandoned(path, match, host, now)
        if reason is None:
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            size = _bytes_under(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
            logger.info("removed %s (%s), a temporary output of an interrupted write: %s",
                        path, size_text(size), reason)
    return removed


def temp_name_for(path: str) -> str:
    """A fresh temporary name beside ``path`` that :func:`remove_stale_temp_files` recognises."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f"{_TEMP_PREFIX}{os.path.basename(path)}."
                                   f"{_host_tag()}-{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _create_temp_file(path: str, suffix: str = "") -> str:
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


def _not_created(path: str, error: OSError) -> OSError:
    """The error to raise for ``path`` when its temporary file, folder or link could not be
    made beside it: ``error`` names the hidden temporary name, this names ``path`` and its
    folder (:class:`DiskFullError` for a full disk), as :func:`require_writable` does."""
    if error.errno in _DISK_FULL_ERRNOS:
        return DiskFullError(path, error)
    folder = os.path.dirname(os.path.abspath(path))
    return OutputNotWritableError(f"cannot write {path}: {error.strerror or error} "
                                  f"(in {folder})")


def _new_temp_file(path: str, suffix: str = "") -> str:
    """:func:`_create_temp_file`, its failure to create the file named as ``path``'s
    (:func:`_not_created`)."""
    try:
        return _create_temp_file(path, suffix)
    except OSError as error:
        # making a missing folder on the way fails naming that folder, which says it already
        if not os.path.basename(str(error.filename or "")).startswith(_TEMP_PREFIX):
            raise
        raise _not_created(path, error) from None


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
        os.remove(_create_temp_file(os.path.join(folder, os.path.basename(target))))
    except OSError as error:
        raise OutputNotWritableError(f"cannot write {path}: {error.strerror or error} "
                                     f"(in {folder})") from None


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
def _moved_into_place(tmp_path: str, path: str) -> Iterator[None]:
    """Around the block that writes the file ``tmp_path``: then rename it to ``path`` and
    sync the folder; on an exception remove it (a full disk: :class:`DiskFullError`)."""
    try:
        yield
        _move_into_place(tmp_path, path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise_if_disk_full(error, path)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it into place on success.

    Readers never see a half-written file: the data is flushed to disk before the
    rename, and on an exception the temporary file is removed and ``path`` is left
    as it was. A full disk raises :class:`DiskFullError` naming ``path``.
    """
    tmp_path = _new_temp_file(path)
    with _moved_into_place(tmp_path, path), open(tmp_path, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomically(path: str, obj: Any, indent: Optional[int] = None,
                          sort_keys: bool = False, final_newline: bool = False) -> None:
    """Write ``obj`` as JSON (``json.dump`` with ``indent`` and ``sort_keys``; a newline at
    the end when ``final_newline``) to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "w", encoding="utf-8") as out:
        json.dump(obj, out, indent=indent, sort_keys=sort_keys)
        if final_newline:
            out.write("\n")


def read_json_or_none(path: str) -> Any:
    """The JSON content of ``path``; None when it cannot be read or is not JSON (missing, a
    folder, or torn: cut short or garbled by a writer that did not write atomically)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Give a temporary path beside ``path`` to write with any library; rename on success.

    Use it for writers that want a file name rather than a handle
    (``kaldiio.WriteHelper``, ``np.save``; for ``torch.save`` use :func:`save_torch`,
    which reports a full disk clearly). The file is flushed to disk before the rename.
    """
    # keep the suffix so libraries that look at it (np.save adds ".npy") behave
    tmp_named = _new_temp_file(path, suffix=os.path.splitext(path)[1])
    with _moved_into_place(tmp_named, path):
        yield tmp_named
        _fsync_path(tmp_named)


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
    try:
        os.mkdir(tmp_dir)
    except OSError as error:
        raise _not_created(path, error) from None
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
    try:
        os.symlink(target, tmp_link)
    except OSError as error:
        raise _not_created(link, error) from None
    try:
        _move_into_place(tmp_link, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_link)
        raise


def save_torch(obj, path: str, before_publish: Optional[Callable[[], None]] = None) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically; a full disk raises :class:`DiskFullError`.

    torch writes through a Python file object here, so the file system's own
    error (ENOSPC) reaches us instead of torch's ``unexpected pos`` message.
    ``before_publish`` runs once the file is complete, just before it appears under
    ``path``; if it raises, ``path`` is left as it was.
    """
    import torch  # noqa: PLC0415 -- the other writers here do not need torch

    with atomic_path(path) as tmp_path:
        with open(tmp_path, "wb") as handle:
            torch.save(obj, handle)
        if before_publish is not None:
            before_publish()
