"""User errors on the command line: one line on stderr and exit status 2, never a traceback.

Wrap a command's ``main`` with :func:`run_command`::

    def main(argv=None):
        run_command(_main, argv, prog="python -m wespeaker_py.bin.score")

An exception that reports a problem with what the user gave (the package's
:class:`~wespeaker_py.errors.WespeakerError`, a bad config key, a malformed
list, a missing file, ...) is printed as ``PROG: error: MESSAGE`` and the
process exits with status 2, as argparse does for bad arguments. Anything
else is a bug and keeps its traceback. ``--debug`` anywhere on the command
line, or ``WESPEAKER_PY_DEBUG=1`` in the environment, shows the traceback of
user errors too. Importing this module does not import torch.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "WESPEAKER_PY_DEBUG"
USAGE_ERROR_STATUS = 2
# Checked by qualified class name, so that no module has to be imported here.
USER_ERROR_CLASSES = frozenset({
    "wespeaker_py.errors.WespeakerError",
    "wespeaker_py.utils.config.ConfigError",
    "wespeaker_py.config.fields.ConfigError",     # where the typed config keeps it
    "wespeaker_py.utils.file_utils.DataFormatError",
    "wespeaker_py.dataset.audio.AudioError",
})
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_user_error(error: BaseException) -> bool:
    """True for errors in the user's input (see the module doc), False for bugs."""
    if isinstance(error, USER_OS_ERRORS):
        return True
    return any(f"{cls.__module__}.{cls.__qualname__}" in USER_ERROR_CLASSES
               for cls in type(error).__mro__)


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
    """Document ``--debug`` in ``--help`` (:func:`run_command` consumes it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")


def run_command(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None,
                prog: Optional[str] = None) -> None:
    """Run ``main(argv)`` and exit: its status (0 for None), or 2 with one line for a user error."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [arg for arg in args if arg != DEBUG_FLAG]
    try:
        status = main(args)
    except KeyboardInterrupt:
        print(f"{prog or 'wespeaker_py'}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debug or not is_user_error(error):
            raise
        print(f"{prog or 'wespeaker_py'}: error: {one_line(error)}", file=sys.stderr)
        sys.exit(USAGE_ERROR_STATUS)
    sys.exit(status or 0)


def bin_prog(module_file: str) -> str:
    """The command to type for a ``bin/`` module: ``python -m wespeaker_py.bin.<name>``."""
    return f"python -m wespeaker_py.bin.{os.path.splitext(os.path.basename(module_file))[0]}"
