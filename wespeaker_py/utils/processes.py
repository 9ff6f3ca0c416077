"""Child processes that end with the process that made them (Linux's parent-death signal).

A DataLoader worker or an extraction job whose parent was killed (``kill -9``, the OOM
killer) would otherwise live on until it next looks at its parent: seconds for torch's
workers, for ever for a job blocked on its queue.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1   # from <linux/prctl.h>


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
