"""Diarization error rate (DER) and Jaccard error rate (JER), as dscore defines them.

Both are computed exactly on the time line (no frame grid): every boundary of a
reference turn, a system turn or a scoring region cuts time into pieces in
which the sets of active reference and system speakers are constant.

Everything is measured inside the evaluation map (a UEM; by default, as
dscore, from the earliest turn onset to the latest offset of reference and
system together): first both sides' turns are trimmed to it, as dscore does, so
a reference speaker who talks only outside it does not exist, and a turn cut by
its edge ends there; then each speaker's overlapping turns are joined into one
(dscore's ``merge_turns``; turns that only touch stay apart), so a collar goes
around the joined turn's ends, not inside it.

DER (NIST RT-09, ``md-eval.pl``), per recording and pooled over recordings:

* scored time: the evaluation map less a no-score zone of +-``collar`` seconds
  around every (trimmed) reference turn boundary, less (``ignore_overlaps``) the
  time where two or more reference speakers talk;
* reference and system speakers are paired one-to-one to maximise the time
  they share in the evaluation map, before the collar and overlap exclusions
  (Hungarian algorithm), as md-eval pairs them;
* in each piece with ``R`` reference and ``S`` system speakers of which ``C``
  are correctly paired: missed ``max(0, R-S)``, false alarm ``max(0, S-R)``,
  confusion ``min(R, S) - C``, each times the piece's duration;
* DER = (missed + false alarm + confusion) / total reference speaker time.

JER (DIHARD II, dscore): over the evaluation map (dscore applies neither the
collar nor the overlap exclusion to JER), speakers are paired one-to-one to
minimise the sum of speaker Jaccard errors ``1 - |ref & sys| / |ref | sys|``;
an unpaired reference speaker counts 1; JER is the mean over reference
speakers (over all recordings' reference speakers when pooled).

Pooled scores cover the reference's recordings and those the evaluation maps
name, as md-eval loops over the reference's files; a recording only the system
output has is left out with a warning.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from wespeaker_py.diarization.turns import Turn
from wespeaker_py.utils.logging_utils import get_logger, listed_names

Region = Tuple[float, float]
Condition = Tuple[float, bool]   # (collar in seconds, overlapped speech scored)
logger = get_logger(__name__)


@dataclass
class ErrorTimes:
    """Seconds of reference speech scored and of each kind of error."""

    scored: float = 0.0
    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0

    def add(self, other: "ErrorTimes") -> None:
        self.scored += other.scored
        self.missed += other.missed
        self.false_alarm += other.false_alarm
        self.confusion += other.confusion

    @property
    def der(self) -> float:
        """DER in percent; 0 when nothing is scored and nothing is wrong, 100 when only FA."""
        errors = self.missed + self.false_alarm + self.confusion
        if self.scored > 0:
            return 100.0 * errors / self.scored
        return 100.0 if errors > 0 else 0.0

    def parts_percent(self, digits: int = 2) -> Tuple[str, str, str]:
        """Missed, false alarm and confusion in percent of the scored time, formatted with
        ``digits`` decimals; ``n/a`` each when no reference speech is scored."""
        if self.scored <= 0:
            return ("n/a",) * 3
        return tuple(f"{100.0 * part / self.scored:.{digits}f}"
                     for part in (self.missed, self.false_alarm, self.confusion))


@dataclass
class SpeakerJaccard:
    """The Jaccard errors (fractions) of one recording's reference speakers."""

    errors: List[float] = field(default_factory=list)
    num_ref: int = 0
    num_sys: int = 0

    @property
    def jer(self) -> float:
        return jer_percent([self])


def jer_percent(parts: Sequence[SpeakerJaccard]) -> float:
    """JER in percent over the reference speakers of ``parts`` (dscore's edge cases)."""
    num_ref = sum(p.num_ref for p in parts)
    num_sys = sum(p.num_sys for p in parts)
    if num_ref == 0:
        return 100.0 if num_sys > 0 else 0.0
    return 100.0 * float(np.mean([e for p in parts for e in p.errors]))


def merge_regions(regions: Sequence[Region]) -> List[Region]:
    """Sorted union of intervals (empty ones dropped)."""
    merged: List[List[float]] = []
    for start, end in sorted(r for r in regions if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def default_evaluation_map(ref: Sequence[Turn], sys: Sequence[Turn]) -> List[Region]:
    """dscore's default: one region from the first onset to the last offset of either side."""
    turns = list(ref) + list(sys)
    if not turns:
        return []
    return [(min(t.start for t in turns), max(t.end for t in turns))]


def trim_turns(turns: Sequence[Turn], regions: Sequence[Region]) -> List[Turn]:
    """The parts of ``turns`` inside the sorted, disjoint ``regions`` (a turn that spans a
    gap between two regions gives a part in each), as dscore trims turns to a UEM."""
    starts = [start for start, _ in regions]
    kept = []
    for turn in turns:
        first = max(0, bisect.bisect_right(starts, turn.start) - 1)
        for start, end in regions[first:]:
            if start >= turn.end:
                break
            if min(end, turn.end) > max(start, turn.start):
                kept.append(Turn(max(start, turn.start), min(end, turn.end), turn.speaker))
    return kept


def merge_speaker_turns(turns: Sequence[Turn]) -> List[Turn]:
    """``turns`` with each speaker's overlapping turns joined (touching ones stay apart, as
    dscore's ``merge_turns`` leaves them), sorted by time."""
    spans: Dict[str, List[List[float]]] = {}
    for turn in sorted(turns, key=lambda t: (t.speaker, t.start, t.end)):
        own = spans.setdefault(turn.speaker, [])
        if own and turn.start < own[-1][1]:
            own[-1][1] = max(own[-1][1], turn.end)
        else:
            own.append([turn.start, turn.end])
    return sorted((Turn(start, end, speaker) for speaker, own in spans.items()
                   for start, end in own), key=lambda t: (t.start, t.end, t.speaker))


def evaluated_turns(ref: Sequence[Turn], sys: Sequence[Turn],
                    evaluation_map: Optional[Sequence[Region]] = None
                    ) -> Tuple[List[Region], List[Turn], List[Turn]]:
    """The evaluation map (merged; :func:`default_evaluation_map` when None) and the
    reference and system turns trimmed to it, each speaker's overlapping turns joined:
    all that DER, JER and the speaker count see."""
    if evaluation_map is None:
        evaluation_map = default_evaluation_map(ref, sys)
    regions = merge_regions(evaluation_map)
    return (regions, merge_speaker_turns(trim_turns(ref, regions)),
            merge_speaker_turns(trim_turns(sys, regions)))


def _pieces(ref: Sequence[Turn], sys: Sequence[Turn], extra_bounds: Sequence[float]):
    """Yield ``(start, end, ref_speakers, sys_speakers)`` for every piece of the time line.

    One sweep over the sorted turn boundaries; a speaker with overlapping turns
    of their own counts once.
    """
    events: Dict[float, List[Tuple[int, int, str]]] = {}
    for side, turns in ((0, ref), (1, sys)):
        for turn in turns:
            if turn.end > turn.start:
                events.setdefault(turn.start, []).append((side, 1, turn.speaker))
                events.setdefault(turn.end, []).append((side, -1, turn.speaker))
    for bound in extra_bounds:
        events.setdefault(bound, [])
    active: Tuple[Counter, Counter] = (Counter(), Counter())
    times = sorted(events)
    for start, end in zip(times, times[1:]):
        for side, step, speaker in events[start]:
            active[side][speaker] += step
            if active[side][speaker] == 0:
                del active[side][speaker]
        yield start, end, frozenset(active[0]), frozenset(active[1])


def _inside(point: float, regions: Sequence[Region]) -> bool:
    """Whether ``point`` lies in one of the sorted, disjoint ``regions``."""
    index = bisect.bisect_right(regions, (point, float("inf"))) - 1
    return index >= 0 and regions[index][0] <= point < regions[index][1]


def _overlap_matrix(pieces, ref_ids: Dict[str, int], sys_ids: Dict[str, int]) -> np.ndarray:
    shared = np.zeros((len(ref_ids), len(sys_ids)))
    for start, end, ref_set, sys_set in pieces:
        for r in ref_set:
            for s in sys_set:
                shared[ref_ids[r], sys_ids[s]] += end - start
    return shared


def _speaker_ids(turns: Sequence[Turn]) -> Dict[str, int]:
    return {name: index for index, name in enumerate(sorted({t.speaker for t in turns}))}


def scored_regions(ref: Sequence[Turn], evaluation_map: Sequence[Region], collar: float,
                   ignore_overlaps: bool) -> List[Region]:
    """The evaluation map less the collars around reference boundaries (and ref overlaps).

    ``ref``: turns as :func:`evaluated_turns` gives them. A collar that is negative or
    not a number is a ``ValueError``.
    """
    if not (math.isfinite(collar) and collar >= 0):
        raise ValueError(f"the collar must be a number of seconds, at least 0; got {collar}")
    excluded: List[Region] = []
    if collar > 0:
        for turn in ref:
            excluded += [(turn.start - collar, turn.start + collar),
                         (turn.end - collar, turn.end + collar)]
    if ignore_overlaps:
        excluded += [(start, end) for start, end, ref_set, _ in _pieces(ref, [], [])
                     if len(ref_set) > 1]
    return subtract_regions(evaluation_map, excluded)


def subtract_regions(regions: Sequence[Region], excluded: Sequence[Region]) -> List[Region]:
    """The parts of ``regions`` that no region of ``excluded`` covers, sorted and disjoint."""
    excluded = merge_regions(excluded)
    # merged regions are sorted and disjoint, so their ends ascend too: each region looks
    # only at the excluded ones from the first ending after its start to the last
    # starting before its end (a many-piece UEM would otherwise cost regions x collars)
    excluded_ends = [ex_end for _, ex_end in excluded]
    kept: List[Region] = []
    for start, end in merge_regions(regions):
        cursor = start
        index = bisect.bisect_right(excluded_ends, cursor)
        while index < len(excluded) and excluded[index][0] < end:
            ex_start, ex_end = excluded[index]
            if ex_start > cursor:
                kept.append((cursor, ex_start))
            cursor = max(cursor, ex_end)
            index += 1
        if cursor < end:
            kept.append((cursor, end))
    return kept


@dataclass
class ScoredPiece:
    """A stretch of scored time with constant speakers: how many reference speakers talk,
    and how many of them are missed, falsely added or confused (DER's counts)."""

    start: float
    end: float
    num_ref: int
    missed: int
    false_alarm: int
    confusion: int


@dataclass
class Alignment:
    """DER's view of one recording: the one-to-one speaker pairing (reference speaker ->
    system speaker) and every scored piece of the time line."""

    pairs: Dict[str, str]
    pieces: List[ScoredPiece]

    def times(self) -> ErrorTimes:
        """Missed, false-alarm, confusion and scored seconds summed over the pieces."""
        times = ErrorTimes()
        for piece in self.pieces:
            duration = piece.end - piece.start
            times.scored += duration * piece.num_ref
            times.missed += duration * piece.missed
            times.false_alarm += duration * piece.false_alarm
            times.confusion += duration * piece.confusion
        return times


def align(ref: Sequence[Turn], sys: Sequence[Turn], collar: float = 0.0,
          ignore_overlaps: bool = False,
          evaluation_map: Optional[Sequence[Region]] = None) -> Alignment:
    """Pair the speakers of one recording over its evaluation map and count the errors of
    each scored piece (module doc)."""
    evaluation_map, ref, sys = evaluated_turns(ref, sys, evaluation_map)
    regions = scored_regions(ref, evaluation_map, collar, ignore_overlaps)
    bounds = [b for region in regions for b in region]
    pieces = list(_pieces(ref, sys, bounds))   # the trimmed turns' speakers: all in the map
    ref_ids, sys_ids = _speaker_ids(ref), _speaker_ids(sys)
    pairs: Dict[str, str] = {}
    if ref_ids and sys_ids:
        shared = _overlap_matrix(pieces, ref_ids, sys_ids)
        ref_names, sys_names = sorted(ref_ids), sorted(sys_ids)
        for r, s in zip(*linear_sum_assignment(-shared)):
            if shared[r, s] > 0:
                pairs[ref_names[r]] = sys_names[s]
    scored = []
    for start, end, ref_set, sys_set in pieces:
        if not _inside(0.5 * (start + end), regions):
            continue
        num_ref, num_sys = len(ref_set), len(sys_set)
        correct = sum(1 for r in ref_set if pairs.get(r) in sys_set)
        scored.append(ScoredPiece(start, end, num_ref, max(0, num_ref - num_sys),
                                  max(0, num_sys - num_ref), min(num_ref, num_sys) - correct))
    return Alignment(pairs, scored)


def error_times(ref: Sequence[Turn], sys: Sequence[Turn], collar: float = 0.0,
                ignore_overlaps: bool = False,
                evaluation_map: Optional[Sequence[Region]] = None) -> ErrorTimes:
    """Missed, false-alarm and confusion seconds of one recording (see the module doc)."""
    return align(ref, sys, collar, ignore_overlaps, evaluation_map).times()


def speaker_jaccard(ref: Sequence[Turn], sys: Sequence[Turn],
                    evaluation_map: Optional[Sequence[Region]] = None) -> SpeakerJaccard:
    """The Jaccard error of each reference speaker of one recording (see the module doc)."""
    _, ref, sys = evaluated_turns(ref, sys, evaluation_map)
    pieces = list(_pieces(ref, sys, []))
    ref_ids, sys_ids = _speaker_ids(ref), _speaker_ids(sys)
    result = SpeakerJaccard(num_ref=len(ref_ids), num_sys=len(sys_ids))
    if not ref_ids:
        return result
    if not sys_ids:
        result.errors = [1.0] * len(ref_ids)
        return result
    ref_time, sys_time = np.zeros(len(ref_ids)), np.zeros(len(sys_ids))
    for start, end, ref_set, sys_set in pieces:
        for r in ref_set:
            ref_time[ref_ids[r]] += end - start
        for s in sys_set:
            sys_time[sys_ids[s]] += end - start
    shared = _overlap_matrix(pieces, ref_ids, sys_ids)
    union = ref_time[:, None] + sys_time[None, :] - shared
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard_error = np.where(union > 0, 1.0 - shared / union, 1.0)
    errors = np.ones(len(ref_ids))
    rows, cols = linear_sum_assignment(jaccard_error)
    errors[rows] = jaccard_error[rows, cols]
    result.errors = errors.tolist()
    return result


@dataclass
class RecordingScore:
    """DER and JER of one recording (or of all, pooled)."""

    times: ErrorTimes
    jaccard: List[SpeakerJaccard]

    @property
    def der(self) -> float:
        return self.times.der

    @property
    def jer(self) -> float:
        return jer_percent(self.jaccard)


Scores = Tuple[Dict[str, RecordingScore], RecordingScore]   # per recording, and pooled


def scored_recordings(ref: Mapping[str, Sequence[Turn]], sys: Mapping[str, Sequence[Turn]],
                      evaluation_maps: Optional[Mapping[str, Sequence[Region]]] = None
                      ) -> Tuple[List[str], List[str]]:
    """The recordings scored, sorted: the reference's and those ``evaluation_maps`` names
    (md-eval loops over the reference's files); and, sorted, the system's others, which
    are left out."""
    names = set(ref) | set(evaluation_maps or {})
    return sorted(names), sorted(set(sys) - names)


def score_recordings(ref: Mapping[str, Sequence[Turn]], sys: Mapping[str, Sequence[Turn]],
                     collar: float = 0.0, ignore_overlaps: bool = False,
                     evaluation_maps: Optional[Mapping[str, Sequence[Region]]] = None
                     ) -> Scores:
    """Per-recording and pooled scores over :func:`scored_recordings`.

    A recording missing from ``sys`` is all missed speech; one only ``sys`` has
    is left out with a warning naming it; one ``evaluation_maps`` does not name
    is scored over :func:`default_evaluation_map`.
    """
    condition = (collar, not ignore_overlaps)
    return score_conditions(ref, sys, [condition], evaluation_maps)[condition]


def score_conditions(ref: Mapping[str, Sequence[Turn]], sys: Mapping[str, Sequence[Turn]],
                     conditions: Sequence[Condition],
                     evaluation_maps: Optional[Mapping[str, Sequence[Region]]] = None
                     ) -> Dict[Condition, Scores]:
    """:func:`score_recordings` at each of ``conditions`` (collar, overlapped speech scored),
    each recording's JER computed once for them all."""
    names, left_out = scored_recordings(ref, sys, evaluation_maps)
    if left_out:
        logger.warning("%d recordings of the system output are not in the reference%s, left "
                       "out of the scores: %s", len(left_out),
                       " or the scoring regions" if evaluation_maps else "", listed_names(left_out))
    scores: Dict[Condition, Scores] = {
        condition: ({}, RecordingScore(ErrorTimes(), [])) for condition in conditions}
    for name in names:
        ref_turns, sys_turns = list(ref.get(name, [])), list(sys.get(name, []))
        uem = evaluation_maps.get(name) if evaluation_maps else None
        # JER applies neither the collar nor the overlap exclusion: one serves every condition
        jaccard = speaker_jaccard(ref_turns, sys_turns, uem)
        for (collar, overlap), (per_recording, overall) in scores.items():
            times = error_times(ref_turns, sys_turns, collar, not overlap, uem)
            per_recording[name] = RecordingScore(times, [jaccard])
            overall.times.add(times)
            overall.jaccard.append(jaccard)
    return scores


@dataclass
class CountScore:
    """How often a system found the reference's number of speakers, over recordings."""

    right: int = 0
    too_few: int = 0
    too_many: int = 0

    @property
    def total(self) -> int:
        return self.right + self.too_few + self.too_many

    @property
    def accuracy(self) -> float:
        """Percent of recordings with the right count (0 without recordings)."""
        return 100.0 * self.right / self.total if self.total else 0.0


def count_speakers(ref: Mapping[str, Sequence[Turn]], sys: Mapping[str, Sequence[Turn]],
                   evaluation_maps: Optional[Mapping[str, Sequence[Region]]] = None
                   ) -> CountScore:
    """Compare the number of distinct speakers with speech in the evaluation map, per
    recording of :func:`scored_recordings` (a recording missing from ``sys`` has none)."""
    score = CountScore()
    for name in scored_recordings(ref, sys, evaluation_maps)[0]:
        uem = evaluation_maps.get(name) if evaluation_maps else None
        _, ref_turns, sys_turns = evaluated_turns(ref.get(name, []), sys.get(name, []), uem)
        truth = len({turn.speaker for turn in ref_turns})
        found = len({turn.speaker for turn in sys_turns})
        if found == truth:
            score.right += 1
        elif found < truth:
            score.too_few += 1
        else:
            score.too_many += 1
    return score
