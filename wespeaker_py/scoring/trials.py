"""Trial lists and score files, held compactly so that millions of trials fit in memory.

A trial list is kept as two integer index arrays (enrollment side, test side)
into per-side lists of distinct keys, plus optional labels and scores; the keys
themselves are stored once. Accepted trial forms, detected per file from its
first line and then enforced on every line:

* ``enroll test target|nontarget`` (VoxCeleb / WeSpeaker ``.kaldi`` lists),
* ``1|0 enroll test`` (the original VoxCeleb1 ``veri_test`` form),
* ``enroll test`` (no labels).

A trial list may repeat a line's enroll and test keys (the repeat is scored, and
counted by the metrics, again): :func:`read_trials` warns with the count.

Score files are ``enroll test score [target|nontarget] [extra numeric columns]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.tables import DataFormatError, iter_table

logger = get_logger(__name__)

LABEL_NAMES = ("nontarget", "target")
_LABEL_TOKENS = {"target": 1, "tgt": 1, "nontarget": 0, "nontgt": 0, "imp": 0}
_WRITE_CHUNK = 100_000


def parse_score(path: str, line_no: int, text: str, what: str = "score") -> float:
    """The score column (or another numeric column, named ``what`` in the message) of a
    score file's line; not a finite number names the line."""
    try:
        score = float(text)
    except ValueError:
        raise DataFormatError(path, line_no, f"{what} {text!r} is not a number") from None
    if not math.isfinite(score):   # np.isfinite costs 30x more on a Python float
        raise DataFormatError(path, line_no, f"{what} {text!r} is not finite")
    return score


def parse_label(token: str) -> Optional[int]:
    """1 for ``target``/``tgt``, 0 for ``nontarget``/``nontgt``/``imp``, else None."""
    return _LABEL_TOKENS.get(token.lower())


class _KeySide:
    """Distinct keys of one trial side, with the line where each first appears."""

    def __init__(self) -> None:
        self.index: Dict[str, int] = {}
        self.first_line: List[int] = []

    def add(self, key: str, line_no: int) -> int:
        row = self.index.get(key)
        if row is None:
            row = len(self.first_line)
            self.index[key] = row
            self.first_line.append(line_no)
        return row


@dataclass
class TrialList:
    """Trials (or scored trials) of one file; see the module docstring for the forms."""

    path: str
    enroll_keys: List[str]
    test_keys: List[str]
    enroll_first_line: np.ndarray
    test_first_line: np.ndarray
    enroll: np.ndarray
    test: np.ndarray
    labels: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    extra: Optional[np.ndarray] = None   # [n, k]: the extra columns of a score file

    def __len__(self) -> int:
        return int(self.enroll.shape[0])

    def rows_in(self, index: Dict[str, int], side: str, source: str) -> np.ndarray:
        """Map the distinct keys of ``side`` ('enroll' or 'test') to rows of ``index``.

        A key missing from ``index`` is an error naming the trials file, the first
        line that uses the key, and ``source`` (the embedding file).
        """
        keys = self.enroll_keys if side == "enroll" else self.test_keys
        first_line = self.enroll_first_line if side == "enroll" else self.test_first_line
        rows = np.empty(len(keys), dtype=np.int64)
        for position, key in enumerate(keys):
            row = index.get(key)
            if row is None:
                raise DataFormatError(self.path, int(first_line[position]),
                                      f"{side} key {key!r} has no embedding in {source}")
            rows[position] = row
        return rows

    def subset(self, keep: np.ndarray) -> "TrialList":
        """The trials where boolean ``keep`` is true (key tables cut to the keys still used)."""
        sides = []
        for keys, first_line, index in ((self.enroll_keys, self.enroll_first_line, self.enroll),
                                        (self.test_keys, self.test_first_line, self.test)):
            used, remapped = np.unique(index[keep], return_inverse=True)
            sides.append(([keys[i] for i in used], first_line[used],
                          remapped.astype(np.int32)))
        (enroll_keys, enroll_first, enroll), (test_keys, test_first, test) = sides
        return TrialList(path=self.path, enroll_keys=enroll_keys, test_keys=test_keys,
                         enroll_first_line=enroll_first, test_first_line=test_first,
                         enroll=enroll, test=test,
                         labels=None if self.labels is None else self.labels[keep],
                         scores=None if self.scores is None else self.scores[keep],
                         extra=None if self.extra is None else self.extra[keep])


class MissingEmbeddingsError(RunFailedError):
    """More trials name utterances without an embedding than the caller accepts."""


@dataclass
class TrialCoverage:
    """How many trials of a list could be scored; the keys without an embedding."""

    path: str
    total: int
    scored: int
    source: str
    missing: Dict[str, int]  # key -> first trial line naming it

    @property
    def lost(self) -> int:
        return self.total - self.scored

    @property
    def lost_fraction(self) -> float:
        return self.lost / self.total if self.total else 0.0

    def describe(self, examples: int = 5) -> str:
        """One line: trials scored and skipped, and the first keys missing (with lines)."""
        text = f"{self.path}: {self.scored} of {self.total} trials scored"
        if not self.lost:
            return text
        named = listed_names([f"{key} (line {line})" for key, line in self.missing.items()],
                             examples)
        utterances = "1 utterance has" if len(self.missing) == 1 else \
            f"{len(self.missing)} utterances have"
        return (f"{text}; {self.lost} skipped ({100 * self.lost_fraction:.3g}%): "
                f"{utterances} no embedding in {self.source}: {named}")

    def log(self, output: str) -> None:
        """One line saying what ``output`` covers: a warning when trials were skipped."""
        (logger.warning if self.lost else logger.info)("%s -> %s", self.describe(), output)


def _rows_or_missing(keys: Sequence[str], first_line: np.ndarray, index: Dict[str, int],
                     missing: Dict[str, int]) -> np.ndarray:
    rows = np.full(len(keys), -1, dtype=np.int64)
    for position, key in enumerate(keys):
        row = index.get(key)
        if row is None:
            missing.setdefault(key, int(first_line[position]))
        else:
            rows[position] = row
    return rows


def keep_scorable_trials(trials: TrialList, enroll_index: Dict[str, int],
                         test_index: Dict[str, int], source: str,
                         max_missing_fraction: float = 0.0
                         ) -> Tuple[TrialList, np.ndarray, np.ndarray, TrialCoverage]:
    """Drop the trials naming a key absent from the indexes (what extraction skipped).

    Returns the kept trials, the per-trial rows of their enroll and test keys, and
    the coverage (log it with :meth:`TrialCoverage.log` once the scores are
    written). When more than ``max_missing_fraction`` of the trials would be lost
    (by default any), :class:`MissingEmbeddingsError` is raised instead, naming the
    missing keys.
    """
    if not 0.0 <= max_missing_fraction <= 1.0:
        raise ValueError(f"max_missing_fraction must be in [0, 1], got {max_missing_fraction}")
    missing: Dict[str, int] = {}
    enroll_rows = _rows_or_missing(trials.enroll_keys, trials.enroll_first_line, enroll_index,
                                   missing)[trials.enroll]
    test_rows = _rows_or_missing(trials.test_keys, trials.test_first_line, test_index,
                                 missing)[trials.test]
    keep = (enroll_rows >= 0) & (test_rows >= 0)
    coverage = TrialCoverage(path=trials.path, total=len(trials), scored=int(keep.sum()),
                             source=source,
                             missing=dict(sorted(missing.items(), key=lambda kv: kv[1])))
    if coverage.lost_fraction > max_missing_fraction or coverage.scored == 0:
        raise MissingEmbeddingsError(
            f"{coverage.describe()}; that is more than --max_missing_fraction "
            f"{max_missing_fraction:g} allows, so nothing was written (extraction logs why "
            f"these utterances were skipped)")
    if coverage.lost:
        trials = trials.subset(keep)
    return trials, enroll_rows[keep], test_rows[keep], coverage


class TrialListBuilder:
    """Trials added one at a time (:meth:`add`), kept in the compact form of
    :class:`TrialList` (:meth:`build`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._enroll_side, self._test_side = _KeySide(), _KeySide()
        self._enroll: List[int] = []
        self._test: List[int] = []

    def add(self, enroll_key: str, test_key: str, line_no: int) -> None:
        """One trial, of line ``line_no`` of :attr:`path`."""
        self._enroll.append(self._enroll_side.add(enroll_key, line_no))
        self._test.append(self._test_side.add(test_key, line_no))

    def build(self, labels: Optional[Sequence[int]] = None,
              scores: Optional[Sequence[float]] = None,
              extra: Optional[Sequence[Sequence[float]]] = None) -> TrialList:
        """The trials added, with their labels, scores and extra columns (each per trial,
        or None); no trial at all is a :class:`DataFormatError`."""
        if not self._enroll:
            raise DataFormatError(self.path, None, "holds no trials")
        return TrialList(
            path=self.path,
            enroll_keys=list(self._enroll_side.index),
            test_keys=list(self._test_side.index),
            enroll_first_line=np.asarray(self._enroll_side.first_line, dtype=np.int64),
            test_first_line=np.asarray(self._test_side.first_line, dtype=np.int64),
            enroll=np.asarray(self._enroll, dtype=np.int32),
            test=np.asarray(self._test, dtype=np.int32),
            labels=None if labels is None else np.asarray(labels, dtype=np.int8),
            scores=None if scores is None else np.asarray(scores, dtype=np.float64),
            extra=None if extra is None else np.asarray(extra, dtype=np.float64),
        )


def _trial_form(fields: Sequence[str]) -> str:
    if len(fields) == 2:
        return "unlabelled"
    if parse_label(fields[2]) is not None:
        return "label_last"
    if fields[0] in ("0", "1"):
        return "label_first"
    return "invalid"


def read_trials(path: str) -> TrialList:
    """Read a trial list in any of the forms of the module docstring.

    A malformed line, an unknown label or a line whose form differs from the
    first line's is a :class:`DataFormatError` naming file and line. Lines that
    repeat an earlier line's enroll and test keys are counted in a warning.
    """
    builder = TrialListBuilder(path)
    labels: List[int] = []
    form = None
    for line_no, fields in iter_table(path, min_fields=2, max_fields=3):
        line_form = _trial_form(fields)
        if line_form == "invalid":
            raise DataFormatError(path, line_no, "expected 'enroll test target|nontarget', "
                                                 f"'1|0 enroll test' or 'enroll test', got "
                                                 f"{' '.join(fields)!r}")
        if form is None:
            form = line_form
        elif line_form != form:
            raise DataFormatError(path, line_no, f"line has the {line_form} form but the "
                                                 f"file started with the {form} form")
        if form == "label_first":
            label, enroll_key, test_key = int(fields[0]), fields[1], fields[2]
        else:
            enroll_key, test_key = fields[0], fields[1]
            label = parse_label(fields[2]) if form == "label_last" else None
        builder.add(enroll_key, test_key, line_no)
        if label is not None:
            labels.append(label)
    trials = builder.build(labels if form != "unlabelled" else None)
    _warn_repeated_trials(trials)
    return trials


def _warn_repeated_trials(trials: TrialList) -> None:
    """A warning with the number of trials that repeat an earlier one's enroll and test
    keys, and of those that swap them (``b a`` after ``a b``, which cosine scores the
    same), each with the line of the first (found by reading the file again, only then)."""
    ids = {key: number for number, key in enumerate(dict.fromkeys(trials.enroll_keys
                                                                  + trials.test_keys))}
    enroll = np.array([ids[key] for key in trials.enroll_keys], dtype=np.int64)[trials.enroll]
    test = np.array([ids[key] for key in trials.test_keys], dtype=np.int64)[trials.test]
    ordered = _first_occurrences(enroll * len(ids) + test)
    either_order = _first_occurrences(np.minimum(enroll, test) * len(ids)
                                      + np.maximum(enroll, test))
    repeated = ~ordered
    swapped = ordered & ~either_order
    kinds = [(mask, description) for mask, description in (
        (repeated, "repeat the enroll and test keys of an earlier line"),
        (swapped, "swap the enroll and test keys of an earlier line")) if mask.any()]
    if not kinds:
        return
    positions = [int(np.argmax(mask)) for mask, _ in kinds]
    line_of = _line_numbers(trials.path, positions)
    counts = " and ".join(
        f"{int(mask.sum())} trial(s) {description} (the first: line {line_of[position]}, "
        f"{trials.enroll_keys[trials.enroll[position]]} {trials.test_keys[trials.test[position]]})"
        for (mask, description), position in zip(kinds, positions))
    logger.warning("%s: %s; each repeat is scored, and counted by the metrics, again",
                   trials.path, counts)


def _first_occurrences(pairs: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries of ``pairs`` whose value no earlier entry has."""
    _, first_of_each = np.unique(pairs, return_index=True)
    is_first = np.zeros(len(pairs), dtype=bool)
    is_first[first_of_each] = True
    return is_first


def _line_numbers(path: str, positions: Sequence[int]) -> Dict[int, int]:
    """The line number of the trials at ``positions`` (0-based, among the trials) of ``path``."""
    wanted = set(positions)
    found: Dict[int, int] = {}
    for position, (line_no, _) in enumerate(iter_table(path)):
        if position in wanted:
            found[position] = line_no
            if len(found) == len(wanted):
                break
    return found


def write_trials(path: str, trials: Iterable[Tuple[str, str, str]]) -> None:
    """Write ``enroll test target|nontarget`` lines atomically (the form :func:`read_trials`
    reads first)."""
    with atomic_open(path, "w", encoding="utf-8") as out:
        out.write("".join(f"{enroll} {test} {label}\n" for enroll, test, label in trials))


def read_score_file(path: str, extra_columns: Union[int, Sequence[str]] = 0) -> TrialList:
    """Read ``enroll test score [label]`` lines, each followed by ``extra_columns`` numbers
    (a count, or their names for messages: the QMF quantities of a normalised score
    file), kept in :attr:`TrialList.extra`.

    The label column is optional but must be present on all lines or none. A
    line with another number of fields, a label that is not one, or a column that
    is not a finite number is a :class:`DataFormatError` naming file and line.
    """
    if isinstance(extra_columns, int):
        extra_columns = tuple(f"extra{index + 1}" for index in range(extra_columns))
    width = len(extra_columns)
    form = " ".join(("enroll test score [label]",) + tuple(extra_columns))
    builder = TrialListBuilder(path)
    labels: List[int] = []
    scores: List[float] = []
    extra: List[List[float]] = []
    has_label = None
    for line_no, fields in iter_table(path):
        # with extra columns, a label in the 4th field means one of them is missing
        if len(fields) not in (3 + width, 4 + width) or (
                width and len(fields) == 3 + width and parse_label(fields[3]) is not None):
            raise DataFormatError(path, line_no, f"expected '{form}', got {len(fields)} "
                                                 f"fields: {' '.join(fields)!r}")
        line_has_label = len(fields) == 4 + width
        if has_label is None:
            has_label = line_has_label
        elif line_has_label != has_label:
            raise DataFormatError(path, line_no, "label column present on some lines only")
        score = parse_score(path, line_no, fields[2])
        if has_label:
            label = parse_label(fields[3])
            if label is None:
                raise DataFormatError(path, line_no,
                                      f"label {fields[3]!r} is not target or nontarget")
            labels.append(label)
        if width:
            extra.append([parse_score(path, line_no, text, name) for text, name
                          in zip(fields[len(fields) - width:], extra_columns)])
        builder.add(fields[0], fields[1], line_no)
        scores.append(score)
    return builder.build(labels if has_label else None, scores, extra if width else None)


def write_score_file(path: str, trials: TrialList, scores: np.ndarray,
                     extra: Optional[np.ndarray] = None, score_format: str = "{:.5f}",
                     extra_format: str = "{:.4f}") -> None:
    """Write ``enroll test score [label] [extra...]`` lines, streaming, atomically.

    ``extra`` holds per-trial numbers appended after the label (shape [n, k]).
    """
    if scores.shape[0] != len(trials):
        raise ValueError(f"{scores.shape[0]} scores for {len(trials)} trials")
    line_format = "{} {} " + score_format
    if trials.labels is not None:
        line_format += " {}"
    if extra is not None:
        line_format += "".join(" " + extra_format for _ in range(extra.shape[1]))
    line_format += "\n"
    enroll_keys, test_keys = trials.enroll_keys, trials.test_keys
    with atomic_open(path, "w", encoding="utf-8") as out:
        for start in range(0, len(trials), _WRITE_CHUNK):
            stop = min(start + _WRITE_CHUNK, len(trials))
            columns = [[enroll_keys[i] for i in trials.enroll[start:stop]],
                       [test_keys[i] for i in trials.test[start:stop]],
                       scores[start:stop].tolist()]
            if trials.labels is not None:
                columns.append([LABEL_NAMES[i] for i in trials.labels[start:stop]])
            if extra is not None:
                columns.extend(extra[start:stop].T.tolist())
            out.write("".join(line_format.format(*row) for row in zip(*columns)))


def read_labelled_scores(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` from the 3rd and 4th columns of a labelled score file.

    Further columns (such as the QMF quantities of a normalised file) are ignored. A
    score that is not a finite number, or a file without both targets and nontargets,
    is a :class:`DataFormatError` naming the file (and line).
    """
    scores: List[float] = []
    labels: List[int] = []
    for line_no, fields in iter_table(path, min_fields=3):
        if len(fields) == 3:
            raise DataFormatError(path, line_no, "no label column: metrics need labelled "
                                                 "trials ('enroll test score target|nontarget')")
        label = parse_label(fields[3])
        if label is None:
            raise DataFormatError(path, line_no, f"label {fields[3]!r} is not target or "
                                                 "nontarget (metrics need labelled trials)")
        score = parse_score(path, line_no, fields[2])
        scores.append(score)
        labels.append(label)
    if not scores:
        raise DataFormatError(path, None, "holds no scores")
    targets = sum(labels)
    if targets in (0, len(labels)):
        raise DataFormatError(path, None, f"metrics need both target and nontarget trials "
                                          f"(got {targets} targets of {len(labels)})")
    return np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int8)
