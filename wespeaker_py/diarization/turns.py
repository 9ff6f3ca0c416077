"""Speaker turns: labelled, overlapping windows -> non-overlapping speaker turns.

Neighbouring windows overlap (1.5 s windows every 0.75 s) and may carry
different labels. Each window keeps the part of the timeline nearer to it than
to its overlapping neighbours: an overlap is split at its midpoint (as WeSpeaker
does). Then touching pieces with the same label are joined into one turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

Region = Tuple[float, float]


@dataclass(frozen=True)
class Turn:
    """One speaker speaking from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def windows_to_turns(windows: Sequence[Region], labels: Sequence[int],
                     speaker_prefix: str = "spk", merge_gap: float = 1e-6) -> List[Turn]:
    """Non-overlapping turns from windows and their speaker labels.

    ``windows`` must be sorted by start (as :func:`subsegments` returns them).
    Same-speaker pieces closer than ``merge_gap`` seconds become one turn; a
    pause found by the VAD between two regions keeps them apart.
    """
    if len(windows) != len(labels):
        raise ValueError(f"{len(windows)} windows but {len(labels)} labels")
    starts = [start for start, _ in windows]
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise ValueError("windows must be sorted by start time")
    turns: List[Turn] = []
    previous_end = float("-inf")
    for index, ((start, end), label) in enumerate(zip(windows, labels)):
        own_start = start
        if index > 0 and windows[index - 1][1] > start:
            own_start = 0.5 * (start + windows[index - 1][1])
        own_end = end
        if index + 1 < len(windows) and windows[index + 1][0] < end:
            own_end = 0.5 * (end + windows[index + 1][0])
        own_start = max(own_start, previous_end)
        if own_end <= own_start:
            continue
        previous_end = own_end
        speaker = f"{speaker_prefix}{int(label)}"
        if turns and turns[-1].speaker == speaker and own_start - turns[-1].end < merge_gap:
            turns[-1] = Turn(turns[-1].start, own_end, speaker)
        else:
            turns.append(Turn(own_start, own_end, speaker))
    return turns
