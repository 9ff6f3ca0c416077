"""Who spoke when, drawn: reference and system speakers on one time line, with DER's errors.

:func:`plot_timeline` draws one recording as an image (PNG, or the format of its
extension, see :func:`~wespeaker_py.utils.plotting.image_format`): a row per reference speaker,
a row per system speaker in the colour of the reference speaker DER pairs it with
(grey and hatched when it is paired with none), and three rows that mark where
speech was missed, falsely added or given to the wrong speaker. Time outside the
scoring regions (a UEM) is shaded. A merged speaker shows as a reference row with
no system row of its colour; a split one as a hatched system row under it.
Without a reference (``ref=None``) it draws the system's speakers alone, a
colour each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from wespeaker_py.diarization.metrics import (ErrorTimes, Region, align, merge_regions,
                                              subtract_regions)
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.utils.plotting import new_figure, save_figure

ERROR_COLOURS = {"missed": "tab:red", "false alarm": "tab:orange", "confusion": "tab:purple"}
UNPAIRED_COLOUR = "0.6"
_ROW_HEIGHT = 0.32  # inches per row
_BAR = 0.7          # bar height, in rows


def _speakers_in_order(turns: Sequence[Turn]) -> List[str]:
    """Speakers by their first turn."""
    first: Dict[str, float] = {}
    for turn in sorted(turns, key=lambda t: (t.start, t.end)):
        first.setdefault(turn.speaker, turn.start)
    return list(first)


def _spans(turns: Sequence[Turn], speaker: str) -> List[Tuple[float, float]]:
    return [(t.start, t.end - t.start) for t in turns if t.speaker == speaker and t.end > t.start]


@dataclass
class TimelineRow:
    """One row of the picture: its label, ``(start, width)`` bars, colour and hatch."""

    label: str
    spans: List[Tuple[float, float]]
    colour: Any
    hatch: str = ""


def timeline_rows(ref: Optional[Sequence[Turn]], sys: Sequence[Turn],
                  evaluation_map: Optional[Sequence[Region]] = None
                  ) -> Tuple[List[TimelineRow], Optional[ErrorTimes]]:
    """The rows :func:`plot_timeline` draws, top to bottom, and DER's error times (no
    collar, overlap scored): reference speakers by first turn; system speakers paired
    with one of them, in their order and colour; unpaired system speakers, grey and
    hatched; then the missed, false-alarm and confusion rows. ``ref=None``: the system
    speakers by first turn, a colour each, and no error times."""
    if ref is None:
        speakers = _speakers_in_order(sys)
        return [TimelineRow(name, _spans(sys, name), colour)
                for name, colour in zip(speakers, _palette(len(speakers)))], None
    alignment = align(ref, sys, 0.0, False, evaluation_map)
    ref_speakers, sys_speakers = _speakers_in_order(ref), _speakers_in_order(sys)
    colour = dict(zip(ref_speakers, _palette(len(ref_speakers))))
    paired_with = {system: reference for reference, system in alignment.pairs.items()}
    rows = [TimelineRow(f"ref {name}", _spans(ref, name), colour[name]) for name in ref_speakers]
    for name in ([alignment.pairs[r] for r in ref_speakers if r in alignment.pairs]
                 + [s for s in sys_speakers if s not in paired_with]):
        reference = paired_with.get(name)
        if reference is None:
            rows.append(TimelineRow(f"sys {name} (unpaired)", _spans(sys, name),
                                    UNPAIRED_COLOUR, "///"))
        else:
            rows.append(TimelineRow(f"sys {name} = {reference}", _spans(sys, name),
                                    colour[reference]))
    for kind, field in (("missed", "missed"), ("false alarm", "false_alarm"),
                        ("confusion", "confusion")):
        spans = [(p.start, p.end - p.start) for p in alignment.pieces if getattr(p, field) > 0]
        rows.append(TimelineRow(kind, _merged(spans), ERROR_COLOURS[kind]))
    return rows, alignment.times()


def plot_timeline(ref: Optional[Sequence[Turn]], sys: Sequence[Turn], image_path: str,
                  title: str = "", evaluation_map: Optional[Sequence[Region]] = None,
                  duration: Optional[float] = None) -> None:
    """Draw one recording's :func:`timeline_rows` into an image, written atomically in
    the format of its extension (:func:`~wespeaker_py.utils.plotting.save_figure`), with
    DER and its parts in the title (without a reference: the speakers and their
    seconds of speech); see the module doc. The time axis runs to the last turn, the
    end of ``evaluation_map`` or ``duration`` (the recording's seconds, when known),
    whichever is latest; a recording without turns says "no speech" on it."""
    from matplotlib.patches import Patch
    rows, times = timeline_rows(ref, sys, evaluation_map)
    figure = new_figure((12.0, 1.3 + _ROW_HEIGHT * len(rows)))
    axes = figure.add_subplot(1, 1, 1)
    for index, row in enumerate(rows):
        y = len(rows) - 1 - index
        if row.spans:
            axes.broken_barh(row.spans, (y - _BAR / 2, _BAR), facecolors=row.colour,
                             hatch=row.hatch, edgecolor="0.3" if row.hatch else row.colour,
                             linewidth=0.4)
    end = max([t.end for t in list(ref or []) + list(sys)] + [duration or 0.0])
    if evaluation_map:
        end = max(end, max(b for _, b in evaluation_map))
        for start, stop in subtract_regions([(0.0, end)], evaluation_map):
            axes.axvspan(start, stop, color="0.92", zorder=0)
    axes.set_yticks(range(len(rows)), [row.label for row in reversed(rows)], fontsize="small")
    axes.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    axes.set_xlabel("time [s]")
    if end > 0:
        axes.set_xlim(0.0, end)
    else:   # no turn and no known length: an axis without times rather than a false one
        axes.set_xlim(0.0, 1.0)
        axes.set_xticks([])
        axes.set_xlabel("time (length unknown)")
    if not any(t.end > t.start for t in list(ref or []) + list(sys)):
        axes.text(0.5, 0.5, "no speech", transform=axes.transAxes, ha="center",
                  va="center", color="0.4")
    axes.grid(True, axis="x", color="0.85", linewidth=0.5)
    if times is None:
        talk = sum(width for row in rows for _, width in row.spans)
        summary = f"{len(rows)} speakers, {talk:.1f} s of speech"
    else:
        axes.axhline(len(ERROR_COLOURS) - 0.5, color="0.5", linewidth=0.6)  # errors below
        axes.legend(handles=[Patch(color=c, label=k) for k, c in ERROR_COLOURS.items()],
                    loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small",
                    frameon=False)
        missed, false_alarm, confusion = times.parts_percent(1)
        summary = (f"DER {times.der:.1f}% (missed {missed}, false alarm {false_alarm}, "
                   f"confusion {confusion}); "
                   f"{len({t.speaker for t in ref})} speakers, "
                   f"{len({t.speaker for t in sys})} found")
    axes.set_title(f"{title}: {summary}" if title else summary, fontsize="medium")
    figure.tight_layout()
    save_figure(figure, image_path)


def file_name(name: str) -> str:
    """``name`` (a recording id or a system's name) as one file name, no two alike: ``%``
    written ``%25`` and ``/`` ``%2F`` (as in URLs), all else as it is."""
    return name.replace("%", "%25").replace("/", "%2F")


def _palette(count: int) -> List:
    """Speaker colours: tab10's without the error colours and grey, then their light
    tab20 variants, then again from the start."""
    from matplotlib import colormaps
    dark, light = colormaps["tab10"].colors, colormaps["tab20"].colors
    kept = (0, 2, 5, 6, 8, 9)   # blue, green, brown, pink, olive, cyan
    colours = [dark[i] for i in kept] + [light[2 * i + 1] for i in kept]
    return [colours[index % len(colours)] for index in range(count)]


def _merged(spans: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """``(start, width)`` spans with touching ones joined (fewer bars to draw)."""
    regions = merge_regions([(start, start + width) for start, width in spans])
    return [(start, end - start) for start, end in regions]
