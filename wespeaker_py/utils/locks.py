"""Locks on files, one run at a time: a second run into the same output stops at once.

A lock is a POSIX record lock on a small file beside the work it guards, held by the process
(:func:`hold_lock`) until :func:`drop_lock` removes the file and lets it go, or the process
ends. Resumable work folders take one (extraction's, the diarization batch's), and so does a
training's ``exp_dir``; a holder may say who it is in the file (:func:`lock_holder` reads it).
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from typing import IO, Optional, Tuple

from wespeaker_py.utils.paths import OutputNotWritableError


# the open lock files of this process by (st_dev, st_ino): the kernel lets a second taker in
# the same process through a POSIX lock, this does not. A holder dropped unreleased is
# closed when collected, which ends its lock, and leaves here with it.
_held_locks: "weakref.WeakValueDictionary[Tuple[int, int], IO[str]]" = \
    weakref.WeakValueDictionary()
_held_guard = threading.Lock()


def _file_id(info: os.stat_result) -> Tuple[int, int]:
    return info.st_dev, info.st_ino


def hold_lock(lock_path: str, holder: Optional[str] = None) -> Optional[IO[str]]:
    """Lock ``lock_path`` (created if absent) for this process; return the open file that
    holds the lock, or None when another process, or another taker in this one, holds it.
    ``holder``: written into the file once it is locked, for :func:`lock_holder`.

    A POSIX record lock (``fcntl.lockf``) belongs to the process that took it: a child
    forked while it is held (a DataLoader worker) does not hold it, and it goes when the
    process ends, whatever its children do (an ``flock`` belongs to the open file, which
    a fork shares: it stayed with a worker that outlived a killed run). The process also
    loses it when it closes *any* descriptor of the file, so the file is opened only here,
    and not again while this process holds it.
    """
    with _held_guard:
        while True:
            try:
                if _file_id(os.stat(lock_path)) in _held_locks:
                    return None   # checked before opening: closing a second descriptor unlocks
            except FileNotFoundError:
                pass
            handle = open(lock_path, "a+")   # readable: lock_holder reads through it
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if error.errno in (errno.EACCES, errno.EAGAIN):   # another process holds it
                    return None
                raise OutputNotWritableError(f"cannot lock {lock_path} ({error.strerror}): "
                                             f"its file system may not support locks; write "
                                             f"the output elsewhere") from None
            # a run that finished between our open and our lock removed the file we locked:
            # a third run may already hold a new one at the path, so lock that instead
            try:
                locked = os.fstat(handle.fileno())
                if os.path.samestat(locked, os.stat(lock_path)):
                    _held_locks[_file_id(locked)] = handle
                    if holder is not None:
                        _write_holder(handle, holder)
                    return handle
            except FileNotFoundError:
                pass
            handle.close()


def _write_holder(handle: IO[str], holder: str) -> None:
    """Write ``holder`` into a held lock's file, past the file object's buffer (a write left
    in it would fail again when the lock is dropped). On a full disk it goes unwritten: the
    lock holds without it, and a refused run says "another process" instead of who."""
    try:
        os.ftruncate(handle.fileno(), 0)
        os.pwrite(handle.fileno(), holder.encode(), 0)
    except OSError:
        pass


def lock_holder(lock_path: str) -> str:
    """What the holder of ``lock_path`` wrote there (:func:`hold_lock`'s ``holder``); empty
    when nothing is written yet or the file is gone."""
    with _held_guard:
        try:
            held = _held_locks.get(_file_id(os.stat(lock_path)))
            if held is not None:   # ours: a second descriptor, once closed, would unlock it
                return os.pread(held.fileno(), 4096, 0).decode(errors="replace").strip()
            with open(lock_path, errors="replace") as handle:
                return handle.read(4096).strip()
        except FileNotFoundError:
            return ""


def drop_lock(handle: IO[str]) -> None:
    """Remove the file of a lock :func:`hold_lock` took, then let go of the lock."""
    with _held_guard:
        try:
            _held_locks.pop(_file_id(os.fstat(handle.fileno())), None)
            os.remove(handle.name)
        except FileNotFoundError:   # removed by hand: the lock still goes below
            pass
        finally:
            handle.close()
