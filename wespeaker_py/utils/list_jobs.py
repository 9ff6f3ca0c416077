"""The one rule for jobs over a list (``embed``/``diarize --wav_scp``, ``bin.extract``).

Such a job skips and counts the entries it cannot use, and ends with one line,
``N done, M skipped (n reason, ...)``. It has failed, and says so with a
:class:`~wespeaker_py.errors.RunFailedError` (exit status 1) instead of writing
its output, when every entry was skipped, or when more than
``max_fail_fraction`` of them were.

The default, :data:`DEFAULT_MAX_FAIL_FRACTION` = 0.5, fails a run that lost more
entries than it produced. The faults that leave a list job silently empty or
half-empty (a wrong path prefix, a folder that is not mounted, a list built on
another machine) skip all or most entries; genuinely bad recordings in a corpus
are a few in a hundred, and skipping them is WeSpeaker's behaviour. A stricter
default would fail small interactive lists on one bad file (1 of 3 is 33%).
Pass ``--max_fail_fraction 0`` to allow no skip at all, ``1`` to fail only when
nothing was done. Importing this module is cheap (no torch).
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from wespeaker_py.errors import RunFailedError

DEFAULT_MAX_FAIL_FRACTION = 0.5
FAIL_FRACTION_FLAG = "--max_fail_fraction"
# how many of the missing files check_missing_inputs names
NAMED_MISSING = 3


def is_fail_fraction(value: float) -> bool:
    """Whether ``value`` can be a ``max_fail_fraction``: a number in [0, 1]."""
    return 0.0 <= value <= 1.0


def parse_fail_fraction(text) -> float:
    """A ``--max_fail_fraction`` value: a number in [0, 1] (an argparse ``type``)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not is_fail_fraction(value):
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


@dataclass
class JobTally:
    """What a list job did: ``done`` entries, and the skipped ones counted by reason."""

    done: int = 0
    skipped: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, done: int, skipped: Mapping[str, int]) -> "JobTally":
        """A tally of ``done`` entries and ``{reason: count}`` skips."""
        return cls(done, Counter({why: n for why, n in skipped.items() if n}))

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def total(self) -> int:
        return self.done + self.num_skipped

    def describe_reasons(self) -> str:
        """``n reason, m other_reason`` (sorted by reason), or an empty string."""
        return ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))

    def describe(self, done_note: str = "") -> str:
        """The job's last line: ``N done, M skipped (n reason, ...)``; ``done_note`` follows N
        (e.g. ``" (5 from an earlier run)"``)."""
        reasons = self.describe_reasons()
        return f"{self.done} done{done_note}, {self.num_skipped} skipped" + \
            (f" ({reasons})" if reasons else "")

    def check(self, source: str, max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION,
              outcome: str = "nothing was written", unit: str = "entries") -> None:
        """Raise :class:`RunFailedError` when nothing was done (every entry of ``source``
        skipped), or more than ``max_fail_fraction`` of the entries were skipped;
        ``outcome`` says what that left undone, ``unit`` (a plural noun: ``utterances``,
        ``recordings``) what the entries are. The message holds :meth:`describe`."""
        if self.done == 0 and self.num_skipped == 0:
            raise RunFailedError(f"nothing done: no {unit} of {source} were processed "
                                 f"({self.describe()}); {outcome}")
        if self.done == 0:
            raise RunFailedError(f"nothing done: all {unit} of {source} were skipped "
                                 f"({self.describe()}); {outcome}")
        if self.num_skipped == 0:
            return
        fraction = self.num_skipped / self.total
        if fraction > max_fail_fraction:
            raise RunFailedError(
                f"{self.num_skipped} of {self.total} {unit} of {source} were skipped "
                f"({100 * fraction:.0f}%, more than {FAIL_FRACTION_FLAG} {max_fail_fraction:g}; "
                f"{self.describe()}); {outcome}. Fix the inputs, or pass "
                f"{FAIL_FRACTION_FLAG} 1 to keep what was done")


def check_missing_inputs(source: str, total: int, missing: Sequence[str],
                         max_fail_fraction: float = DEFAULT_MAX_FAIL_FRACTION) -> None:
    """Before any model loads: fail now when the files of ``source`` that are missing or
    cannot be read (``missing``, of ``total`` entries) would alone fail the run by
    :meth:`JobTally.check`.

    Those entries would only be skipped after the model had loaded and the rest
    had been computed; this says so at once (exit status 1), naming the first few.
    """
    if not missing or (len(missing) < total and len(missing) / total <= max_fail_fraction):
        return
    first = ", ".join(missing[:NAMED_MISSING])
    if len(missing) == total:
        raise RunFailedError(f"none of the {total} files of {source} can be read (missing or "
                             f"unreadable; the first: {first}); nothing was computed")
    raise RunFailedError(
        f"{len(missing)} of the {total} files of {source} are missing or unreadable "
        f"({100 * len(missing) / total:.0f}%, more than {FAIL_FRACTION_FLAG} "
        f"{max_fail_fraction:g}; the first: {first}); nothing was computed. Fix the "
        f"list, or pass {FAIL_FRACTION_FLAG} 1 to embed the others")
