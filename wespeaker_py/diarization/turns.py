"""Speaker turns: labelled, overlapping windows -> non-overlapping speaker turns.

Neighbouring windows overlap (1.5 s windows every 0.75 s) and may carry
different labels. Two ways to share the timeline among them:

* :func:`windows_to_turns` (WeSpeaker's): each window keeps the part nearer to
  it than to its overlapping neighbours, an overlap split at its midpoint; turn
  boundaries fall on a 0.75 s grid.
* :func:`frames_to_turns`: every frame (0.1 s by default) inside a window
  goes to one of the speakers of the windows that cover it: the one whose
  centroid is most similar to those windows' embeddings, each window weighted
  by how close the frame is to its centre. A window that straddles a change of
  speaker resembles both, so the change moves to where the evidence shifts
  instead of the midpoint.

Then touching pieces with the same label are joined into one turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from wespeaker_py.utils.vectors import unit_rows

Region = Tuple[float, float]
# a time over the frame step can land a rounding error past a frame edge (12.3 / 0.3 is
# 41.00000000000001): edges within this many frames of one count as on it
FRAME_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Turn:
    """One speaker speaking from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def clip_turns(turns: Sequence[Turn], duration: float) -> List[Turn]:
    """``turns`` within a recording of ``duration`` seconds: an end past it is cut to it, a
    turn starting at or past it is left out. The windows lie on a 10 ms grid, so the last
    one can end up to 10 ms past the audio."""
    return [turn if turn.end <= duration else Turn(turn.start, duration, turn.speaker)
            for turn in turns if turn.start < duration]


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


def frames_to_turns(windows: Sequence[Region], labels: Sequence[int], embeddings: np.ndarray,
                    step: float = 0.1, speaker_prefix: str = "spk") -> List[Turn]:
    """Non-overlapping turns on a ``step``-second frame grid (see the module doc).

    Frames covered by no window are not speech. Memory is frames x speakers.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(windows) != len(labels) or len(labels) != len(embeddings):
        raise ValueError(f"{len(windows)} windows, {len(labels)} labels and "
                         f"{len(embeddings)} embeddings")
    if not len(windows):
        return []
    unit = unit_rows(embeddings, dtype=None)  # in their own dtype (float32 as extracted)
    speakers = int(labels.max()) + 1
    sums = np.zeros((speakers, unit.shape[1]))
    np.add.at(sums, labels, unit)
    centroids = unit_rows(sums)
    similarity = unit @ centroids.T                           # [windows, speakers]
    edges = np.asarray(windows, dtype=np.float64) / step
    bounds = np.stack([np.floor(edges[:, 0] + FRAME_TOLERANCE),
                       np.ceil(edges[:, 1] - FRAME_TOLERANCE)],
                      axis=1).astype(np.int64)  # frames touched by each window
    first, last = int(bounds[:, 0].min()), int(bounds[:, 1].max())
    evidence = np.zeros((last - first, speakers))
    candidate = np.zeros((last - first, speakers), dtype=bool)
    for (begin, end), label, scores in zip(bounds, labels, similarity):
        if end <= begin:
            continue
        centre, half = 0.5 * (begin + end), 0.5 * (end - begin)
        frames = np.arange(begin, end)
        weight = 1.0 - np.abs(frames + 0.5 - centre) / (half + 1.0)  # > 0 inside the window
        evidence[begin - first:end - first] += weight[:, None] * scores[None, :]
        candidate[begin - first:end - first, label] = True
    evidence[~candidate] = -np.inf
    choice = np.argmax(evidence, axis=1)
    # frames are cut back to the windows' exact extent (the speech regions)
    regions: List[List[float]] = []
    for start, end in windows:
        if regions and start <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], end)
        else:
            regions.append([start, end])
    turns: List[Turn] = []
    for region_start, region_end in regions:
        begin = max(int(np.floor(region_start / step + FRAME_TOLERANCE)), first)
        end = min(int(np.ceil(region_end / step - FRAME_TOLERANCE)), last)
        for index in range(begin, end):
            # turn times to the microsecond: a sliver shorter than that is no turn
            start = round(max(index * step, region_start), 6)
            stop = round(min((index + 1) * step, region_end), 6)
            if stop <= start or not candidate[index - first].any():
                continue
            speaker = f"{speaker_prefix}{int(choice[index - first])}"
            if turns and turns[-1].speaker == speaker and start - turns[-1].end < 1e-6:
                turns[-1] = Turn(turns[-1].start, stop, speaker)
            else:
                turns.append(Turn(start, stop, speaker))
    return turns
