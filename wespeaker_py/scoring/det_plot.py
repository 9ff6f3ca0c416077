"""DET curves: the operating points as text and a plot on normal-deviate axes (PNG).

matplotlib is an optional dependency (``pip install wespeaker_py[plot]``); only
the plot needs it.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from wespeaker_py.scoring.metrics import DetPoints, eer_from_det
from wespeaker_py.utils.file_utils import atomic_open, atomic_path

_TICKS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_AXIS_RANGE = (0.00051, 0.5)


def write_det_points(path: str, points: DetPoints) -> None:
    """Write ``threshold fpr fnr`` lines (a ``#`` header first), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as out:
        out.write("# threshold false_alarm_rate miss_rate (accept score > threshold)\n")
        for start in range(0, points.thresholds.size, 100_000):
            rows = zip(points.thresholds[start:start + 100_000].tolist(),
                       points.fpr[start:start + 100_000].tolist(),
                       points.fnr[start:start + 100_000].tolist())
            out.write("".join(f"{t:.6g} {fa:.6g} {miss:.6g}\n" for t, fa, miss in rows))


def plot_det_curve(points: DetPoints, png_path: str, title: str = "") -> None:
    """Draw the DET curve with its EER marked and save it as a PNG, atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("drawing DET curves needs matplotlib: "
                          "pip install 'wespeaker_py[plot]' (or pip install matplotlib)"
                          ) from error
    # clip so that rates of exactly 0 or 1 map to finite positions off the axes
    fpr = norm.ppf(np.clip(points.fpr, 1e-12, 1 - 1e-12))
    fnr = norm.ppf(np.clip(points.fnr, 1e-12, 1 - 1e-12))
    eer = eer_from_det(points)
    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(fpr, fnr, "r")
    ticks = norm.ppf(_TICKS)
    labels = [f"{100 * tick:g}" for tick in _TICKS]
    axes.set_xticks(ticks, labels)
    axes.set_yticks(ticks, labels)
    axes.set_xlim(norm.ppf(_AXIS_RANGE))
    axes.set_ylim(norm.ppf(_AXIS_RANGE))
    axes.set_xlabel("false-alarm rate [%]")
    axes.set_ylabel("false-reject rate [%]")
    if 0 < eer < 1:
        axes.plot([norm.ppf(eer)], [norm.ppf(eer)], "o")
        axes.annotate(f"EER = {100 * eer:.2f}%", xy=(norm.ppf(eer), norm.ppf(eer)),
                      xytext=(10, 10), textcoords="offset points")
    if title:
        axes.set_title(title)
    axes.grid(True)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
