"""One logging format for every entry point, and the same logging in dataloader workers."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional, Sequence

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
_PACKAGE_LOGGER = "wespeaker_py"


def setup_logging(level: int = logging.INFO, rank: int = None) -> None:
    """Configure the root logger once; non-zero DDP ranks only log warnings."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=_FORMAT, force=True)


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a module (use ``get_logger(__name__)``)."""
    return logging.getLogger(name)


def listed_names(names: Sequence[str], most: int = 10) -> str:
    """For a message: the first ``most`` names, comma-separated, and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class _LogFile(logging.FileHandler):
    """A log file that a failed write (a full disk) does not turn into a traceback per
    record: the first failure is one warning on the other handlers (the console), the
    records after it are dropped, and closing the file never raises."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._lost = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self._lost:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if self._lost or not isinstance(error, OSError):
            super().handleError(record)
            return
        self._lost = True
        get_logger(__name__).warning(
            "cannot write the log file %s (%s); the work goes on, and the file misses the "
            "lines from here on", self.baseFilename, error.strerror or error)

    def close(self) -> None:
        try:
            super().close()
        except OSError:   # the flush of what a full disk refused
            pass


def log_to_file(path: str) -> Callable[[], None]:
    """Copy the package's INFO-and-above records into ``path`` (appending, on a line of its
    own after a last line a killed run left unfinished); return the undo function."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _end_last_line(path)
    handler = _LogFile(path)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    if root.handlers and root.handlers[0].formatter is not None:
        handler.setFormatter(root.handlers[0].formatter)
    else:
        handler.setFormatter(logging.Formatter(_FORMAT))
    package = logging.getLogger(_PACKAGE_LOGGER)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)

    def undo() -> None:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()

    return undo


def _end_last_line(path: str) -> None:
    """End an existing log's unfinished last line (a run stopped mid-write), so that the
    next run's first line starts a line of its own."""
    try:
        with open(path, "rb+") as log:
            size = log.seek(0, os.SEEK_END)
            if size:
                log.seek(size - 1)
                if log.read(1) != b"\n":
                    log.write(b"\n")
    except OSError:   # missing (a new log), or not writable now: the handler says so
        pass


class WorkerLogging:
    """A DataLoader ``worker_init_fn`` that gives a worker the logging of the process
    that made the loader: its root level, and ``log_path`` (e.g. ``train.log``) when set.

    A forked worker inherits the handlers and needs nothing. A worker started by
    spawn or forkserver (Python 3.14's default on Linux) starts with none, so
    without this its warnings (the "skipping KEY" lines) would reach neither the
    log file nor the log format.
    """

    def __init__(self, log_path: Optional[str] = None):
        self.level = logging.getLogger().getEffectiveLevel()
        self.log_path = log_path

    def __call__(self, worker_id: int) -> None:
        if logging.getLogger().handlers:
            return
        setup_logging(self.level, rank=0)
        if self.log_path:
            log_to_file(self.log_path)
