"""Cutting speech regions into the overlapping windows that get one embedding each.

As in WeSpeaker: windows of 1.5 s every 0.75 s inside each speech region. A
region no longer than a window is one piece; in a longer region the windows
start at 0, shift, 2*shift, ... for as long as a window starting there would
still reach past the end minus one shift, and the last one is cut at the
region's end (so it is between ``window - shift`` and ``window`` long). All
arithmetic is on a 10 ms grid so that boundaries are exact.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

Region = Tuple[float, float]
GRID = 0.01  # seconds


def _to_grid(seconds: float) -> int:
    return int(round(seconds / GRID))


def subsegments(regions: Sequence[Region], window: float = 1.5,
                shift: float = 0.75) -> List[Region]:
    """Overlapping windows ``(start, end)`` in seconds covering every region exactly."""
    if not 0 < shift <= window:
        raise ValueError(f"need 0 < shift <= window, got window={window}, shift={shift}")
    window_n, shift_n = _to_grid(window), _to_grid(shift)
    pieces: List[Region] = []
    for start, end in regions:
        start_n, end_n = _to_grid(start), _to_grid(end)
        length = end_n - start_n
        if length <= 0:
            continue
        if length <= window_n:
            pieces.append((start_n * GRID, end_n * GRID))
            continue
        for offset in range(0, length - window_n + shift_n, shift_n):
            piece_end = min(offset + window_n, length)
            pieces.append(((start_n + offset) * GRID, (start_n + piece_end) * GRID))
    return [(round(a, 2), round(b, 2)) for a, b in pieces]
