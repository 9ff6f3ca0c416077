"""How many CPU threads a command computes with: one rule for every command and job.

``--num_threads N`` (every command has it, see :mod:`wespeaker_py.cli.common`)
wins; else ``OMP_NUM_THREADS`` when set; else :func:`default_num_threads`:
half the cores this process may run on, at most :data:`MAX_DEFAULT_THREADS`, at
least 1, shared among ``--nj`` jobs. Torch's own default takes every core, and
its threads wait for each other at every operation: on a machine where another
program keeps one core busy, all of them wait for the one that gets no turn
(bench/results_threads.md: 2.5x slower on the shared 2-core machine). Leaving
half the cores to others avoids that on a shared machine, and the cap keeps a
large one shared too; ``--num_threads`` takes more on a machine of one's own.
Importing this module is cheap (no torch).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Optional

from wespeaker_py.utils.values import is_whole_number

THREADS_ENV = "OMP_NUM_THREADS"
MAX_DEFAULT_THREADS = 4

# set by using_threads() for the command that runs: the count it asked for
# (--num_threads or the caller's OMP_NUM_THREADS), and the count in use
_requested: Optional[int] = None
_in_use: Optional[int] = None


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_threads(num_jobs: int = 1) -> int:
    """Threads of each of ``num_jobs`` jobs: half the available cores, at most 4, at least 1."""
    return max(1, min(MAX_DEFAULT_THREADS, available_cores() // (2 * max(1, num_jobs))))


def check_num_threads(value: object, name: str = "num_threads") -> Optional[int]:
    """``value`` as a thread count: None (the default count) stays None, a whole number
    >= 1 (Python's or numpy's) becomes an ``int``; anything else is a ``ValueError``
    naming ``name``."""
    if value is None:
        return None
    if not is_whole_number(value) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 or None, got {value!r}")
    return int(value)


def env_num_threads() -> Optional[int]:
    """``OMP_NUM_THREADS`` as a positive integer, or None when unset or not one."""
    try:
        value = int(os.environ.get(THREADS_ENV, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def threads_per_job(num_jobs: int) -> int:
    """Threads of each of ``num_jobs`` parallel jobs: what the command asked for
    (``--num_threads`` or ``OMP_NUM_THREADS``, per job), else :func:`default_num_threads`."""
    requested = _requested if _in_use is not None else env_num_threads()
    return requested or default_num_threads(num_jobs)


def num_threads_in_use() -> int:
    """The threads of the running command (or what one would get now)."""
    return _in_use or env_num_threads() or default_num_threads()


@contextlib.contextmanager
def using_threads(requested: Optional[int] = None) -> Iterator[int]:
    """Compute with ``requested`` threads (None: ``OMP_NUM_THREADS``, else the default)
    until the block ends; yields the count.

    Sets ``OMP_NUM_THREADS`` (read by torch and BLAS when they load, and by child
    processes) and, when torch is already loaded, ``torch.set_num_threads``; both
    are put back afterwards (so that a command run inside a test leaves no trace).
    """
    global _requested, _in_use
    requested = check_num_threads(requested)
    saved = (_requested, _in_use, os.environ.get(THREADS_ENV))
    _requested = requested or env_num_threads()
    _in_use = _requested or default_num_threads()
    os.environ[THREADS_ENV] = str(_in_use)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(_in_use)
    try:
        yield _in_use
    finally:
        _requested, _in_use, env = saved
        if env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = env
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
