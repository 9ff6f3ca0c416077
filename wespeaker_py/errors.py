"""The package's exceptions: one root, :class:`WespeakerError`, with a message that names the input.

Every error the package raises on purpose derives from :class:`WespeakerError`;
the command-line home (:mod:`wespeaker_py.cli.common`) maps them to an exit
status with ``isinstance``:

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
from typing import Iterable


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


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of another library's error message (at most ``limit`` characters;
    the error's type name when the message is empty), to quote inside one of ours."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


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
