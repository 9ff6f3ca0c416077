"""The package's exceptions: one root, :class:`WespeakerError`, with a message that names the input.

Every error the package raises on purpose derives from :class:`WespeakerError`;
:func:`exit_status` maps them to the exit status of the command they end (the
command-line home, :mod:`wespeaker_py.cli.common`, prints :func:`one_line` of them; a
training run writes the same line last in its ``train.log``), with ``isinstance``:

- :class:`WespeakerError` and its subclasses: what the user gave is at fault (a
  file, an argument, a config key, audio, a model folder), exit status 2;
- :class:`RunFailedError` and its subclasses: the run finished without a usable
  result (nothing extracted, a full disk, a non-finite loss), exit status 1.

Classes used in one layer stay in their module (``ConfigError`` in
:mod:`wespeaker_py.config.fields`, ``DataFormatError`` in :mod:`wespeaker_py.utils.tables`,
``DiskFullError`` in :mod:`wespeaker_py.utils.atomic_files`, ...) and derive from one of
these two; the classes keep their builtin bases (``ValueError``, ``RuntimeError``,
``OSError``) so that ``except ValueError`` code still catches them. Importing this module
is cheap (no torch).
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

# the exit statuses of the two roots (see above)
RUN_FAILED_STATUS = 1
USER_ERROR_STATUS = 2
# OSErrors that mean the user named a wrong path (a full disk is a DiskFullError, status 1)
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class WespeakerError(Exception):
    """Root of the package's errors. Raised as such: a problem with what the user gave
    (a file, an argument); the message names it."""


class AudioInputError(WespeakerError, ValueError):
    """Audio that cannot be embedded: missing, not audio, empty, NaN or too short.

    ``reason`` is the short name a skipped input is counted under; the named errors of
    :mod:`wespeaker_py.audio.errors` each have their own."""

    reason = "unreadable_audio"


class ModelSourceError(WespeakerError, ValueError):
    """A model folder, checkpoint or ONNX file that cannot be loaded as a speaker model."""


class MissingPackagesError(WespeakerError, ImportError):
    """Packages an optional feature needs are not installed (a setup the user can fix)."""


class RunFailedError(WespeakerError, RuntimeError):
    """The command ran but its result is not usable (every utterance skipped, too many
    trials lost, ...); the message says what happened and where it was counted."""


def first_line(error: BaseException, limit: int = 300, sentence: bool = False) -> str:
    """The first line of another library's error message (the error's type name when the
    message is empty), to quote inside one of ours; with ``sentence``, its first sentence
    only (torch goes on with advice that may not apply). Longer than ``limit`` characters, it
    is cut at a word's end, with ``...``."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    end = text.find(". ") if sentence else -1
    if end >= 0:
        text = text[:end + 1]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def exit_status(error: BaseException) -> Optional[int]:
    """The exit status of a command that ``error`` ended, for an error the user can act on;
    None for a bug (keep the traceback)."""
    if isinstance(error, RunFailedError):
        return RUN_FAILED_STATUS
    if isinstance(error, (WespeakerError,) + USER_OS_ERRORS):
        return USER_ERROR_STATUS
    return None


def one_line(error: BaseException) -> str:
    """The error's message on one line (a missing file's name included)."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def did_you_mean(word: str, choices: Iterable[str], ignore_case: bool = False) -> str:
    """``; did you mean 'X'?`` naming the choice closest to a mistyped ``word``, or an
    empty string when none is close; with ``ignore_case`` a difference of case alone
    (``k`` for ``K``) counts as closest."""
    choices = list(choices)
    if ignore_case:
        by_folded = {choice.casefold(): choice for choice in choices}
        close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1)
        close = [by_folded[match] for match in close]
    else:
        close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
