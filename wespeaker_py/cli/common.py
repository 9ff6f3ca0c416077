"""The command-line home: flag parsing and error-to-exit-status mapping for every command.

Both the ``wespeaker-py`` command (:mod:`wespeaker_py.cli.main`) and each
WeSpeaker-compatible ``python -m wespeaker_py.bin.<name>`` build their parser
with the helpers here and run their ``main`` through :func:`run_main`.

Flags are accepted the way WeSpeaker's python-fire scripts accept them:
``--exp_dir`` and ``--exp-dir`` alike, ``True``/``False`` as booleans and a bare
``--flag`` as true; recipes rely on all three.

Errors (see :mod:`wespeaker_py.errors`) end in one line on stderr and an exit
status, never a traceback for a problem the user can fix:

- :class:`~wespeaker_py.errors.RunFailedError` (the run finished without a usable
  result: nothing extracted, a full disk) exits 1;
- any other :class:`~wespeaker_py.errors.WespeakerError` (bad config key,
  malformed list, bad audio, bad model folder) or a missing/unreadable file
  exits 2, as argparse does for bad arguments;
- Ctrl-C exits 130 (with how to go on, for a command that says so:
  :func:`hint_on_interrupt`); anything else is a bug and keeps its traceback.

``--debug`` anywhere on the command line, or ``WESPEAKER_PY_DEBUG=1`` in the
environment, shows the traceback of every error. Importing this module does not
import torch, so every ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import math
import os
import select
import sys
from typing import Any, Callable, Iterator, List, Optional, Sequence

from wespeaker_py.errors import RunFailedError, WespeakerError, exit_status, one_line
from wespeaker_py.utils.booleans import parse_bool
from wespeaker_py.utils.list_jobs import DEFAULT_MAX_FAIL_FRACTION, parse_fail_fraction
from wespeaker_py.utils.progress import check_progress_settings
from wespeaker_py.utils.threads import MAX_DEFAULT_THREADS, THREADS_ENV, using_threads

DEBUG_FLAG = "--debug"
DEBUG_ENV = "WESPEAKER_PY_DEBUG"
OK_STATUS = 0
# what a write to standard output fails with when its file cannot take it
_OUTPUT_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})
INTERRUPTED_STATUS = 130
BROKEN_PIPE_STATUS = 141   # 128 + SIGPIPE, what a shell shows for a Unix tool cut off so


class UsageError(WespeakerError):
    """Arguments that argparse accepts but that do not fit together (exit status 2)."""


class InterruptedWithHint(KeyboardInterrupt):
    """Ctrl-C in a command that can be continued: :func:`run_main` says ``hint`` after
    ``interrupted`` (exit status 130). Raised by :func:`hint_on_interrupt`."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@contextlib.contextmanager
def hint_on_interrupt(hint: str) -> Iterator[None]:
    """Ctrl-C inside the block ends the command with ``hint`` (how to go on, as a
    subcommand's message on SIGTERM says) after ``interrupted``."""
    try:
        yield
    except InterruptedWithHint:
        raise
    except KeyboardInterrupt as stop:   # chained: --debug shows where it stopped
        raise InterruptedWithHint(hint) from stop


# -- flags -----------------------------------------------------------------------------------

def str2bool(value: Any) -> bool:
    """An argparse ``type``: a boolean word of
    :func:`~wespeaker_py.utils.booleans.parse_bool` (the words of config overrides too)."""
    if isinstance(value, bool):
        return value
    try:
        return parse_bool(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_flag(parser: argparse.ArgumentParser, name: str, *aliases: str, **kwargs) -> None:
    """Add ``--name`` together with its hyphenated spelling ``--na-me`` and any
    ``aliases`` (WeSpeaker's short options such as ``-ad``)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, *aliases, dest=name, **kwargs)


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool = False,
                  help: str = "") -> None:
    """A boolean flag given as ``--name``, ``--name True`` or ``--name False``."""
    add_flag(parser, name, type=str2bool, nargs="?", const=True, default=default, help=help)


def int_between(low: int, high: Optional[int] = None,
                range_note: str = "") -> Callable[[Any], int]:
    """An argparse ``type`` taking a whole number from ``low`` to ``high`` (None: no upper
    bound); ``range_note`` says in its refusal what the range is, in parentheses."""
    note = f" ({range_note})" if range_note else ""

    def parse(text: Any) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{note}, got {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}{note}, "
                                             f"got {value}")
        return value
    return parse


_at_least_one = int_between(1)


def positive_int(text: Any) -> int:
    """An argparse ``type``: a whole number >= 1 (the one type of every such flag)."""
    return _at_least_one(text)


def open_probability(text) -> float:
    """An argparse ``type``: a number strictly between 0 and 1 (a prior probability)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def positive_number(text) -> float:
    """An argparse ``type``: a finite number > 0 (a cost, a duration cap)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:   # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative(text: Any) -> float:
    """An argparse ``type``: a finite number >= 0 (a collar, a margin in seconds)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:   # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command shares: ``--debug`` and ``--num_threads`` (both applied by
    :func:`run_main`, before the command runs)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    add_flag(parser, "num_threads", type=positive_int, default=None, metavar="N",
             help=_threads_help(shared_among_jobs=False))


def _threads_help(shared_among_jobs: bool) -> str:
    """``--num_threads``' help; the default is shared among ``--nj`` jobs where there are
    any (:class:`_BinParser`)."""
    return (f"CPU threads each process computes with (default: ${THREADS_ENV} if set, else "
            f"half the available cores, at most {MAX_DEFAULT_THREADS}"
            f"{', shared among --nj jobs' if shared_among_jobs else ''})")


def add_fail_fraction_flag(parser: argparse.ArgumentParser) -> None:
    """``--max_fail_fraction`` of a job over a list (see :mod:`wespeaker_py.utils.list_jobs`)."""
    add_flag(parser, "max_fail_fraction", type=parse_fail_fraction,
             default=DEFAULT_MAX_FAIL_FRACTION, metavar="F",
             help=f"fail (exit 1, the job's output not written) when more than this fraction "
                  f"of the list is skipped (default {DEFAULT_MAX_FAIL_FRACTION:g}; 1: only "
                  f"when nothing was done)")


def add_missing_trials_flag(parser: argparse.ArgumentParser) -> None:
    """``--max_missing_fraction`` of a scoring command (see
    :func:`wespeaker_py.scoring.trials.keep_scorable_trials`)."""
    add_flag(parser, "max_missing_fraction", type=parse_fail_fraction, default=0.0, metavar="F",
             help="largest fraction of trials that may be skipped because they name an "
                  "utterance without an embedding (default 0: any such trial is an error)")


def requested_threads(argv: Sequence[str]) -> Optional[int]:
    """``--num_threads N`` of a command line (either spelling), or None when absent or
    not a whole number >= 1 (the command's parser then reports it)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_flag(pre, "num_threads", default=None)
    try:
        known, _ = pre.parse_known_args(list(argv))
        return positive_int(known.num_threads) if known.num_threads is not None else None
    except (argparse.ArgumentError, argparse.ArgumentTypeError):
        return None


def parse_channel_flag(value: str):
    """``--channel``'s value as a channel policy (an argparse error when it is not one)."""
    from wespeaker_py.audio import parse_channel   # here, so that --help needs no numpy
    try:
        return parse_channel(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_channel_flag(parser: argparse.ArgumentParser) -> None:
    """``--channel``, on every command that reads audio: which channel of a multi-channel
    recording to use (the policy of :mod:`wespeaker_py.audio`)."""
    add_flag(parser, "channel", type=parse_channel_flag, default="first",
             metavar="first|mean|loudest|N",
             help="channel of multi-channel audio to use: first (default, as in training), "
                  "mean (average of the channels), loudest (highest energy), or a channel "
                  "number N from 0")


def bin_prog(module_file: str) -> str:
    """The command to type for a ``bin/`` module: ``python -m wespeaker_py.bin.<name>``."""
    return f"python -m wespeaker_py.bin.{os.path.splitext(os.path.basename(module_file))[0]}"


class FlagParser(argparse.ArgumentParser):
    """The argument parser of our commands and tools: flags added with :func:`add_flag`
    have two spellings, and an abbreviation matching both spellings of one flag (``--min``:
    ``--min_epoch`` and ``--min-epoch``) names that flag, as it did with one spelling."""

    def _get_option_tuples(self, option_string):
        matches, actions = [], set()
        for match in super()._get_option_tuples(option_string):
            if id(match[0]) not in actions:
                actions.add(id(match[0]))
                matches.append(match)
        return matches


class _BinParser(FlagParser):
    """A ``bin/`` parser. Its module adds ``--nj``, if it has one, after the common flags,
    so whether ``--num_threads``' help names the ``--nj`` jobs is decided when the help
    is formatted."""

    def format_help(self) -> str:
        threads = self._option_string_actions.get("--num_threads")
        if threads is not None:
            threads.help = _threads_help("--nj" in self._option_string_actions)
        return super().format_help()


def bin_parser(module_file: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of a ``bin/`` module: named as typed, its description kept as written,
    with the flags every command shares. ``kwargs`` go to ``argparse.ArgumentParser``."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    parser = _BinParser(prog=bin_prog(module_file), description=description, **kwargs)
    add_common_flags(parser)
    return parser


def debug_requested(argv: Sequence[str]) -> bool:
    """True when ``--debug`` is on the command line or ``WESPEAKER_PY_DEBUG=1``."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


# -- errors and exit status ------------------------------------------------------------------

def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end was closed (and not some other
    pipe of the command's, such as a worker's, that broke)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False   # no poll here, or not a real file (captured in tests)


class StandardOutputError(RunFailedError):
    """Standard output refused what a command wrote (a full disk under ``cmd > out``, a
    quota, an I/O error): what it printed is lost, though the files it wrote are whole."""


class _GuardedStdout:
    """Standard output, whose refused writes are a :class:`StandardOutputError` (one line)
    instead of a bare OSError (the traceback of a bug). A closed pipe stays a
    BrokenPipeError, which :func:`run_main` ends quietly."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, operation: Callable[..., Any], *args: Any) -> Any:
        try:
            return operation(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            if error.errno not in _OUTPUT_REFUSED:
                raise
            raise StandardOutputError(f"cannot write standard output ({error.strerror}); "
                                      f"what the command printed is lost") from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _guarded_stdout() -> Iterator[None]:
    """Standard output as :class:`_GuardedStdout` while a command runs, where it is a real
    file (a test's captured output is left alone)."""
    stream = sys.stdout
    try:
        stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield
        return
    sys.stdout = _GuardedStdout(stream)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _GuardedStdout):
            sys.stdout = stream


def _discard_stdout() -> None:
    """Point standard output at the null device, so that flushing it at exit finds no
    closed pipe to complain about."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    finally:
        os.close(null)


def run_main(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None,
             prog: Optional[str] = None) -> int:
    """Run ``main(argv)`` (``--debug`` removed) and return the process exit status.

    Use as ``sys.exit(run_main(main))``; ``main`` itself raises ordinary
    exceptions, so that it stays testable in process. A ``main`` returning a
    non-integer (e.g. the files it wrote) counts as success. ``main`` runs with
    the threads of ``--num_threads`` (:func:`~wespeaker_py.utils.threads.using_threads`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [arg for arg in args if arg != DEBUG_FLAG]
    prog = prog or os.path.basename(sys.argv[0]) or "wespeaker_py"
    try:
        check_progress_settings()
        with using_threads(requested_threads(args)), _guarded_stdout():
            status = main(args)
            sys.stdout.flush()   # a reader gone before the last output shows here, not at exit
    except KeyboardInterrupt as stop:
        if debug:
            raise
        hint = f"; {stop.hint}" if isinstance(stop, InterruptedWithHint) else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED_STATUS
    except Exception as error:  # noqa: BLE001 -- sorted into user errors and bugs below
        if isinstance(error, BrokenPipeError) and not debug and _stdout_reader_gone():
            # the reader of our output went away (`| head`): stop quietly, as Unix tools do
            _discard_stdout()
            return BROKEN_PIPE_STATUS
        if isinstance(error, StandardOutputError):
            _discard_stdout()   # the exit's flush would fail the same way
        code = exit_status(error)
        if debug or code is None:
            raise
        hint = "" if isinstance(error, UsageError) else \
            f" (run with {DEBUG_FLAG} for the traceback)"
        print(f"{prog}: error: {one_line(error)}{hint}", file=sys.stderr)
        return code
    return status if isinstance(status, int) else OK_STATUS
