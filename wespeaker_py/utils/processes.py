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
# A worker hands each tensor over through a Unix socket that Python's multiprocessing makes
# at <temporary folder>/pymp-XXXXXXXX/listener-XXXXXXXX; a socket's path holds at most 107
# bytes (108 with its NUL).
_SOCKET_PATH_BYTES = 107
_SOCKET_BELOW_TEMP = os.path.join("pymp-XXXXXXXX", "listener-XXXXXXXX")


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
    """Refuse to start DataLoader workers under a temporary folder whose path is too long
    for the socket their tensors pass through: each batch would be lost with a traceback on
    stderr, and the loop would end as if the data ran out."""
    if num_workers <= 0:
        return
    folder = tempfile.gettempdir()
    socket = os.fsencode(os.path.join(folder, _SOCKET_BELOW_TEMP))
    if len(socket) > _SOCKET_PATH_BYTES:
        raise WespeakerError(
            f"the temporary folder {folder} ({len(os.fsencode(folder))} bytes) is too long "
            f"for DataLoader workers: they pass tensors through a socket below it, whose path "
            f"may hold at most {_SOCKET_PATH_BYTES} bytes; set TMPDIR to a shorter folder "
            f"(e.g. TMPDIR=/tmp), or use no workers (num_workers 0)")
