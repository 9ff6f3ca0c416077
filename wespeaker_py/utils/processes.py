"""Child processes that end with the process that made them (Linux's parent-death signal),
and a temporary folder their tensors can pass through.

A DataLoader worker or an extraction job whose parent was killed (``kill -9``, the OOM
killer) would otherwise live on until it next looks at its parent: seconds for torch's
workers, for ever for a job blocked on its queue.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import tempfile

from wespeaker_py.errors import WespeakerError

_PR_SET_PDEATHSIG = 1   # from <linux/prctl.h>
# a Unix socket's path holds at most 107 bytes (108 with its NUL)
_SOCKET_PATH_BYTES = 107


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
