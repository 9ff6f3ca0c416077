"""Child processes that end with the process that made them (Linux's parent-death signal),
a temporary folder their tensors can pass through, and room for those tensors in /dev/shm.

A DataLoader worker or an extraction job whose parent was killed (``kill -9``, the OOM
killer) would otherwise live on until it next looks at its parent: seconds for torch's
workers, for ever for a job blocked on its queue.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import tempfile

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

_PR_SET_PDEATHSIG = 1   # from <linux/prctl.h>
# a Unix socket's path holds at most 107 bytes (108 with its NUL)
_SOCKET_PATH_BYTES = 107
# where DataLoader workers put the tensors they hand over (torch's shared memory, Linux)
SHARED_MEMORY = "/dev/shm"


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent (``parent_pid``, the
    process that forked or spawned it) ends; nothing where ``prctl`` is missing.

    A parent already gone before the request took effect ends this process at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent_pid:
        os._exit(1)


def tie_worker_to(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """:func:`die_with_parent` for a DataLoader worker of the process ``parent_pid``, when it
    is that process's direct child (fork, spawn). A worker started by a forkserver (Python
    3.14's default on Linux) is the server's child, and is left to torch's own check."""
    if os.getppid() == parent_pid:
        die_with_parent(parent_pid, sig)


def check_temp_folder_for_workers(num_workers: int) -> None:
    """Refuse to start DataLoader workers when the Unix socket their tensors pass through
    cannot be made: Python's multiprocessing puts it in its temporary folder
    (``$TMPDIR/pymp-*/listener-*``), and under too long a ``TMPDIR`` each batch would be
    lost with a traceback on stderr while the loop ends, or waits, as if the data ran out.
    The socket path is asked of multiprocessing itself, which newer Pythons move to a
    shorter folder when ``TMPDIR`` is too long."""
    if num_workers <= 0:
        return
    from multiprocessing.connection import arbitrary_address
    socket = os.fsencode(arbitrary_address("AF_UNIX"))
    if len(socket) > _SOCKET_PATH_BYTES:
        folder = tempfile.gettempdir()
        raise WespeakerError(
            f"the temporary folder {folder} ({len(os.fsencode(folder))} bytes) is too long "
            f"for DataLoader workers: they pass tensors through a socket below it, whose path "
            f"may hold at most {_SOCKET_PATH_BYTES} bytes; set TMPDIR to a shorter folder "
            f"(e.g. TMPDIR=/tmp), or use no workers (num_workers 0)")


def shared_memory_advice(no_workers: str) -> str:
    """What to do about a /dev/shm too small for the workers' tensors: run with
    ``no_workers`` (how the run's command asks for none, e.g. ``--num_workers 0``), or give
    /dev/shm more room."""
    return (f"Run with {no_workers}, or give {SHARED_MEMORY} more room "
            f"(docker run --shm-size 8g)")


def free_shared_memory_text() -> str:
    """The free space of /dev/shm, in words (``"64 MB free"``)."""
    try:
        return f"{shutil.disk_usage(SHARED_MEMORY).free / 2**20:.0f} MB free"
    except OSError as error:
        return f"free space unknown ({error.strerror})"


def warn_if_shared_memory_below(needed_bytes: float, taken_by: str, effect: str,
                                advice: str) -> None:
    """Warn when /dev/shm has less free space than the ``needed_bytes`` that the tensors
    DataLoader workers keep ready may take; nothing for no bytes (no workers) or without a
    /dev/shm (macOS, where tensors are shared another way).

    The warning reads ``/dev/shm has F MB free, less than the N MB that {taken_by}:
    {effect}. {advice}``: ``taken_by`` says what the bytes are, ending in "may take" and how
    they were sized; ``effect`` what a worker that finds no room does to the run;
    ``advice`` what to do (:func:`shared_memory_advice`).
    """
    if needed_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:
        return
    if free < needed_bytes:
        logger.warning("%s has %s, less than the %.0f MB that %s: %s. %s", SHARED_MEMORY,
                       free_shared_memory_text(), needed_bytes / 2**20, taken_by, effect,
                       advice)
