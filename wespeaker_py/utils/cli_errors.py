"""One-line errors for the ``bin/`` commands: bad input exits 2, a failed run exits 1.

A command's ``main`` raises ordinary exceptions (so that it stays testable in
process); :func:`run_main` is what ``python -m wespeaker_py.bin.<name>`` calls. It
turns the errors a user can fix (a data, list or config problem, a missing file)
into ``<prog>: error: <message>`` on stderr and exit code 2, a run that finished
without a usable result (:class:`RunFailedError`, a full disk) into exit code 1,
and shows the traceback only with ``--debug`` on the command line or
``WESPEAKER_DEBUG=1`` in the environment.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional

DEBUG_FLAG = "--debug"
DEBUG_ENV = "WESPEAKER_DEBUG"
INPUT_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1


class RunFailedError(RuntimeError):
    """The command ran but its result is not usable (every utterance skipped, too many
    trials lost, ...); the message says what happened and where it was counted."""


# (module, class) of the input errors raised by the library; a module that was
# never imported cannot have raised its error, so none is imported here
_INPUT_ERRORS = (("wespeaker_py.utils.file_utils", "DataFormatError"),
                 ("wespeaker_py.config.fields", "ConfigError"),
                 ("wespeaker_py.train.checkpoint", "CheckpointMismatchError"))


def _input_error_types() -> tuple:
    loaded = tuple(getattr(sys.modules[module], name) for module, name in _INPUT_ERRORS
                   if module in sys.modules and hasattr(sys.modules[module], name))
    return loaded + (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                     PermissionError)


def _run_failed_types() -> tuple:
    file_utils = sys.modules.get("wespeaker_py.utils.file_utils")
    return (RunFailedError,) + ((file_utils.DiskFullError,) if file_utils else ())


def _debug_requested(argv: List[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_main(main: Callable[[Optional[List[str]]], object],
             argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Call ``main(argv)`` (``--debug`` removed) and return the process exit code.

    Use as ``sys.exit(run_main(main))`` under ``if __name__ == "__main__"``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    prog = prog or os.path.basename(sys.argv[0]) or "wespeaker_py"
    try:
        main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 -- sorted into user errors below
        if debug:
            raise
        if isinstance(error, _input_error_types()):
            code = INPUT_ERROR_EXIT
        elif isinstance(error, _run_failed_types()):
            code = RUN_FAILED_EXIT
        else:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {message} (run with {DEBUG_FLAG} for the traceback)",
              file=sys.stderr)
        return code
    return 0
