"""Errors on the command line: one line on stderr and an exit status, never a traceback
for a problem the user can fix.

Every command (``wespeaker-py`` and each ``python -m wespeaker_py.bin.<name>``)
runs its ``main`` through :func:`run_main`:

- an error in what the user gave (the package's
  :class:`~wespeaker_py.errors.WespeakerError`, a bad config key, a malformed
  list, bad audio, a missing file) prints ``PROG: error: MESSAGE`` and exits 2,
  as argparse does for bad arguments;
- a run that finished without a usable result
  (:class:`~wespeaker_py.errors.RunFailedError`, a full disk) exits 1 the same way;
- Ctrl-C exits 130; anything else is a bug and keeps its traceback.

``--debug`` anywhere on the command line, or ``WESPEAKER_PY_DEBUG=1`` in the
environment, shows the traceback of every error. Importing this module does not
import torch: error classes are recognised by their qualified names.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "WESPEAKER_PY_DEBUG"
USER_ERROR_STATUS = 2
RUN_FAILED_STATUS = 1
INTERRUPTED_STATUS = 130
USER_ERROR_CLASSES = frozenset({
    "wespeaker_py.errors.WespeakerError",
    "wespeaker_py.config.fields.ConfigError",
    "wespeaker_py.utils.file_utils.DataFormatError",
    "wespeaker_py.dataset.audio.AudioError",
})
RUN_FAILED_CLASSES = frozenset({
    "wespeaker_py.errors.RunFailedError",
    "wespeaker_py.utils.file_utils.DiskFullError",
})
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _is_a(error: BaseException, class_names: frozenset) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in class_names
               for cls in type(error).__mro__)


def is_user_error(error: BaseException) -> bool:
    """True for errors in the user's input (see the module doc), False for bugs."""
    return isinstance(error, USER_OS_ERRORS) or _is_a(error, USER_ERROR_CLASSES)


def is_run_failure(error: BaseException) -> bool:
    """True for a run that ended without a usable result (nothing extracted, a full disk)."""
    return _is_a(error, RUN_FAILED_CLASSES)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a missing file's name included)."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def debug_requested(argv: Sequence[str]) -> bool:
    """True when ``--debug`` is on the command line or ``WESPEAKER_PY_DEBUG=1``."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Document ``--debug`` in ``--help`` (:func:`run_main` consumes it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")


def run_main(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None,
             prog: Optional[str] = None) -> int:
    """Run ``main(argv)`` (``--debug`` removed) and return the process exit status.

    Use as ``sys.exit(run_main(main))``; ``main`` itself raises ordinary
    exceptions, so that it stays testable in process.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [arg for arg in args if arg != DEBUG_FLAG]
    prog = prog or os.path.basename(sys.argv[0]) or "wespeaker_py"
    try:
        status = main(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except Exception as error:  # noqa: BLE001 -- sorted into user errors and bugs below
        if debug:
            raise
        if is_user_error(error):
            code = USER_ERROR_STATUS
        elif is_run_failure(error):
            code = RUN_FAILED_STATUS
        else:
            raise
        print(f"{prog}: error: {one_line(error)} (run with {DEBUG_FLAG} for the traceback)",
              file=sys.stderr)
        return code
    return status if isinstance(status, int) else 0


def bin_prog(module_file: str) -> str:
    """The command to type for a ``bin/`` module: ``python -m wespeaker_py.bin.<name>``."""
    return f"python -m wespeaker_py.bin.{os.path.splitext(os.path.basename(module_file))[0]}"
