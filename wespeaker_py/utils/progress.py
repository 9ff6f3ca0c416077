"""Progress bars: a tqdm bar at a terminal, a plain line now and then in a log.

Every bar of the package comes from :func:`progress_bar`. At a terminal it is an
ordinary tqdm bar, redrawn in place. When its stream is not a terminal (standard error
redirected to a file or a pipe, as under nohup or slurm), each refresh is a line of its
own, at most every ``WESPEAKER_PY_PROGRESS_INTERVAL`` seconds (30 by default), and the
bar's last state is a line when it closes. ``WESPEAKER_PY_PROGRESS=0`` turns every bar
off. tqdm's own ``TQDM_*`` environment defaults apply to what these do not set.

A stream that cannot be written any more (the reader of a pipe gone: ``2>&1 | tee log``
whose tee died with the login session) costs one warning and the bars on that stream,
never the command: bars are not worth hours of training.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import weakref
from typing import Any, Callable, Iterable, Optional, TextIO

from tqdm import tqdm

from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

PROGRESS_ENV = "WESPEAKER_PY_PROGRESS"
INTERVAL_ENV = "WESPEAKER_PY_PROGRESS_INTERVAL"
DEFAULT_LOG_INTERVAL = 30.0

_CURSOR_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LINE_BREAK = re.compile(r"[\r\n]")

# streams a bar failed to write to: every later bar on them is off
_lost_streams: "weakref.WeakSet[TextIO]" = weakref.WeakSet()


class ProgressSettingError(WespeakerError, ValueError):
    """A progress environment variable set to a value it cannot have."""


class _LineWriter:
    """The file tqdm writes to away from a terminal: each refresh becomes one line (tqdm
    redraws a bar with a carriage return, and moves the cursor for ``position``).

    An ``OSError`` from the stream turns off the bars on it (tqdm itself lets every
    error but EIO through, and a broken pipe would end the command)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lost = False

    def write(self, text: str) -> None:
        for line in _LINE_BREAK.split(_CURSOR_CODE.sub("", text)):
            if line.strip():
                self._guarded(self.stream.write, line.rstrip() + "\n")

    def flush(self) -> None:
        self._guarded(self.stream.flush)

    def _guarded(self, operation: Callable[..., Any], *args: Any) -> None:
        if self._lost or self.stream in _lost_streams:
            return
        try:
            operation(*args)
        except OSError as error:
            self._lost = True
            with contextlib.suppress(TypeError):   # a stream that takes no weak reference
                _lost_streams.add(self.stream)
            logger.warning("progress bars are off from now on: writing them to %s failed "
                           "(%s: %s); the work goes on",
                           getattr(self.stream, "name", "their stream"),
                           type(error).__name__, error)


def _bars_on() -> bool:
    value = os.environ.get(PROGRESS_ENV, "")
    if value not in ("", "0", "1"):
        raise ProgressSettingError(f"{PROGRESS_ENV}={value!r}: give 1 (progress bars, the "
                                   "default) or 0 (none)")
    return value != "0"


def _log_interval() -> float:
    value = os.environ.get(INTERVAL_ENV, "")
    if not value:
        return DEFAULT_LOG_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ProgressSettingError(f"{INTERVAL_ENV}={value!r}: give the seconds between two "
                                   "progress lines of a log, a number of 0 or more")
    return seconds


def check_progress_settings() -> None:
    """Raise :class:`ProgressSettingError` now if either variable has a bad value (commands
    call it at their start, not when their first bar opens, maybe hours later)."""
    _bars_on()
    _log_interval()


def progress_bar(iterable: Optional[Iterable] = None, *, desc: str,
                 total: Optional[float] = None, unit: str = "it", enabled: bool = True,
                 file: Optional[TextIO] = None, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable``, or one moved with ``.update`` up to ``total``.

    It writes to ``file`` (standard error by default): redrawn in place at a terminal,
    else a line per refresh, at most every ``WESPEAKER_PY_PROGRESS_INTERVAL`` seconds, and
    one when it closes. ``enabled=False`` or ``WESPEAKER_PY_PROGRESS=0`` give a silent bar
    that still iterates, as is a bar on a stream that an earlier bar failed to write
    to, or with no standard error at all (a command started with ``2>&-``). ``options``
    are tqdm's (``position``, ``leave``, ``initial``); away from a terminal every bar is
    its own line and is kept. A bad value of either variable is a
    :class:`ProgressSettingError` naming it.
    """
    on, interval = _bars_on(), _log_interval()
    stream = sys.stderr if file is None else file
    options.update(desc=desc, total=total, unit=unit)
    if not (on and enabled) or stream is None or stream in _lost_streams:
        return tqdm(iterable, disable=True, **options)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **options)
    options.update(position=0, leave=True)
    # miniters=1: look at the clock on every update, so that a line comes once the
    # interval has passed (tqdm's adaptive miniters waits far longer when a job slows)
    return tqdm(iterable, file=_LineWriter(stream), mininterval=interval, miniters=1,
                **options)
