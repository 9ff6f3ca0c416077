"""DER/JER tables of system RTTMs against a reference RTTM, and their time-line plots.

What ``python -m wespeaker_py.bin.score_diarization`` prints, for use from Python:

    from wespeaker_py.diarization.report import comparison_table, score_table
    table, pooled = score_table("ref.rttm", "sys.rttm", collars=[0.0, 0.25])
    print(comparison_table("ref.rttm", {"mine": "sys.rttm"}, collars=[0.0, 0.25]))

Each function that takes file names reads them itself; to make tables and plots of the
same files, read them once with :func:`read_scored` and give the :class:`ScoredSet` to
:func:`scored_table`, :func:`scored_comparison`, :func:`plot_scored` and
:func:`plot_scored_systems` (the log then says what the reading found once).

The scores are :mod:`.metrics`' (dscore's definitions). The reference's recordings (and
the UEM's) are scored; a system recording outside them is left out and the log names it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from wespeaker_py.diarization.metrics import (Condition, Region, RecordingScore, count_speakers,
                                              score_conditions, scored_recordings)
from wespeaker_py.diarization.plot import file_name, plot_timeline
from wespeaker_py.diarization.rttm import read_rttm, read_uem
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.utils.logging_utils import get_logger, listed_names
from wespeaker_py.utils.progress import progress_bar
from wespeaker_py.utils.tables import DataFormatError

Recordings = Dict[str, List[Turn]]
logger = get_logger(__name__)


@dataclass(frozen=True)
class ScoredSet:
    """What one system is scored on: the reference turns, the system turns of the
    recordings scored, and the scoring regions (None: each recording's default)."""

    ref: Recordings
    hyp: Recordings
    regions: Optional[Dict[str, List[Region]]]


@dataclass(frozen=True)
class SystemScore:
    """One system's pooled DER at each collar (overlapped speech scored) and its JER."""

    der_by_collar: Dict[float, float]
    jer: float


def read_scored(ref_rttm: str, sys_rttm: str, uem: Optional[str] = None) -> ScoredSet:
    """Read the reference, the system (its recordings outside the reference and the UEM
    left out, the log names them) and the UEM (the log names reference recordings it lacks).

    Raises:
        DataFormatError: the reference holds no ``SPEAKER`` line, or a line of either
            file (or the UEM) is malformed; the message names file and line.
    """
    ref, hyp = read_rttm(ref_rttm), read_rttm(sys_rttm)
    if not ref:   # DER would read 0.00: nothing to miss, and every false alarm uncounted
        raise DataFormatError(ref_rttm, None, "the reference holds no SPEAKER lines: there is "
                                              "no speech to score against")
    regions = read_uem(uem) if uem else None
    names, left_out = scored_recordings(ref, hyp, regions)
    if left_out:
        logger.warning("%s: %d recordings are not in %s%s, left out of the scores: %s",
                       sys_rttm, len(left_out), ref_rttm, f" or {uem}" if uem else "",
                       listed_names(left_out))
        hyp = {key: turns for key, turns in hyp.items() if key not in left_out}
    if regions is not None:
        unnamed = [key for key in names if key not in regions]
        if unnamed:
            logger.warning("%s does not name %d recordings of %s, scored from their first to "
                           "last turn: %s", uem, len(unnamed), ref_rttm, listed_names(unnamed))
    return ScoredSet(ref, hyp, regions)


def _table_row(name: str, score: RecordingScore, collar: float, overlap: bool) -> str:
    """One Markdown row of :func:`score_table`: the condition, the error shares (``n/a``
    without scored speech), DER and JER."""
    missed, false_alarm, confusion = score.times.parts_percent(2)
    return (f"| {name} | {collar:g} | {'scored' if overlap else 'excluded'} | "
            f"{missed} | {false_alarm} | {confusion} | {score.der:.2f} | {score.jer:.2f} |")


def score_table(ref_rttm: str, sys_rttm: str, collars: Sequence[float], per_file: bool = False,
                uem: Optional[str] = None) -> Tuple[str, Dict[Condition, RecordingScore]]:
    """The Markdown table of one system for each collar, overlapped speech scored and
    excluded (``per_file``: a row per recording too), and the pooled score of each
    (collar, overlap scored) condition."""
    return scored_table(read_scored(ref_rttm, sys_rttm, uem), collars, per_file)


def scored_table(scored: ScoredSet, collars: Sequence[float], per_file: bool = False
                 ) -> Tuple[str, Dict[Condition, RecordingScore]]:
    """:func:`score_table` of a system already read (:func:`read_scored`)."""
    lines = ["| recording | collar (s) | overlap | missed % | false alarm % | confusion % "
             "| DER % | JER % |", "|---|---|---|---|---|---|---|---|"]
    conditions = [(collar, overlap) for collar in collars for overlap in (True, False)]
    scores = score_conditions(scored.ref, scored.hyp, conditions, scored.regions)
    overall: Dict[Condition, RecordingScore] = {}
    for collar, overlap in conditions:
        files, pooled = scores[(collar, overlap)]
        overall[(collar, overlap)] = pooled
        if per_file:
            lines += [_table_row(name, score, collar, overlap) for name, score in files.items()]
        lines.append(_table_row(f"all ({len(files)})", pooled, collar, overlap))
    return "\n".join(lines) + "\n", overall


def score_system(ref: Mapping[str, Sequence[Turn]], hyp: Mapping[str, Sequence[Turn]],
                 collars: Sequence[float],
                 regions: Optional[Mapping[str, Sequence[Region]]] = None) -> SystemScore:
    """Pooled DER at each of ``collars`` (at least one; overlapped speech scored) and JER."""
    if not collars:
        raise ValueError("score_system: collars is empty; give at least one collar")
    scores = score_conditions(ref, hyp, [(collar, True) for collar in collars], regions)
    # JER ignores the collar (dscore applies neither collar nor overlap exclusion to it),
    # so every collar's pooled score holds the same one
    jer = scores[(collars[0], True)][1].jer
    return SystemScore({collar: scores[(collar, True)][1].der for collar in collars}, jer)


def comparison_table(ref_rttm: str, systems: Mapping[str, str], collars: Sequence[float],
                     uem: Optional[str] = None) -> str:
    """One Markdown row per system (``systems``: name -> RTTM): DER per collar (overlapped
    speech scored), JER, and how often the number of speakers was right."""
    return scored_comparison({name: read_scored(ref_rttm, path, uem)
                              for name, path in systems.items()}, collars)


def scored_comparison(systems: Mapping[str, ScoredSet], collars: Sequence[float]) -> str:
    """:func:`comparison_table` of systems already read (name -> :func:`read_scored`'s
    set), in their order."""
    head = ("| system | " + " | ".join(f"DER % (collar {c:g})" for c in collars)
            + " | JER % | right count | too few | too many |")
    lines = [head, "|" + "---|" * (len(collars) + 5)]
    for name, scored in systems.items():
        score = score_system(scored.ref, scored.hyp, collars, scored.regions)
        ders = " | ".join(f"{score.der_by_collar[collar]:.2f}" for collar in collars)
        counts = count_speakers(scored.ref, scored.hyp, scored.regions)
        lines.append(f"| {name} | {ders} | {score.jer:.2f} | "
                     f"{counts.accuracy:.0f}% ({counts.right}/{counts.total}) | "
                     f"{counts.too_few} | {counts.too_many} |")
    return "\n".join(lines) + "\n"


def plot_recordings(ref_rttm: str, sys_rttm: str, plot_dir: str,
                    uem: Optional[str] = None) -> int:
    """Draw every recording of the reference or the system into ``plot_dir``; the count.

    Each is ``<recording>.png``, the id as :func:`~wespeaker_py.diarization.plot.file_name`
    writes it."""
    return plot_scored(read_scored(ref_rttm, sys_rttm, uem), plot_dir)


def plot_scored(scored: ScoredSet, plot_dir: str) -> int:
    """:func:`plot_recordings` of a system already read (:func:`read_scored`)."""
    os.makedirs(plot_dir, exist_ok=True)
    names = sorted(set(scored.ref) | set(scored.hyp))
    for name in progress_bar(names, desc="plots", unit="rec", enabled=len(names) >= 20):
        plot_timeline(scored.ref.get(name, []), scored.hyp.get(name, []),
                      os.path.join(plot_dir, f"{file_name(name)}.png"), name,
                      scored.regions.get(name) if scored.regions else None)
    return len(names)


def plot_systems(ref_rttm: str, systems: Mapping[str, str], plot_dir: str,
                 uem: Optional[str] = None) -> Dict[str, int]:
    """:func:`plot_recordings` of each system (``systems``: name -> RTTM) into its own
    folder ``plot_dir/<name>`` (the name as :func:`~wespeaker_py.diarization.plot.file_name`
    writes it); each folder and the count drawn there, in the order of ``systems``."""
    return plot_scored_systems({name: read_scored(ref_rttm, path, uem)
                                for name, path in systems.items()}, plot_dir)


def plot_scored_systems(systems: Mapping[str, ScoredSet], plot_dir: str) -> Dict[str, int]:
    """:func:`plot_systems` of systems already read (name -> :func:`read_scored`'s set)."""
    drawn: Dict[str, int] = {}
    for name, scored in systems.items():
        folder = os.path.join(plot_dir, file_name(name))
        drawn[folder] = plot_scored(scored, folder)
    return drawn
