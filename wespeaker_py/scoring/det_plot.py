"""Pictures of a verification system's scores: DET curves and target/nontarget histograms.

``write_det_points`` writes the DET operating points as text;
``plot_det_curves`` draws one or more DET curves (EER in each legend entry) on
normal-deviate axes; ``plot_score_histogram`` draws the score distributions of
target and nontarget trials. Plots are PNG files written atomically
(:mod:`wespeaker_py.utils.plotting`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy.stats import norm

from wespeaker_py.scoring.metrics import DetPoints, eer_from_det
from wespeaker_py.utils.atomic_files import atomic_open
from wespeaker_py.utils.plotting import new_figure, save_figure

_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_HISTOGRAM_BINS = 60


def write_det_points(path: str, points: DetPoints) -> None:
    """Write ``threshold fpr fnr`` lines (a ``#`` header first), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as out:
        out.write("# threshold false_alarm_rate miss_rate (accept score > threshold)\n")
        for start in range(0, points.thresholds.size, 100_000):
            rows = zip(points.thresholds[start:start + 100_000].tolist(),
                       points.fpr[start:start + 100_000].tolist(),
                       points.fnr[start:start + 100_000].tolist())
            out.write("".join(f"{t:.6g} {fa:.6g} {miss:.6g}\n" for t, fa, miss in rows))


def plot_det_curves(curves: Sequence[Tuple[str, DetPoints]], png_path: str,
                    title: str = "") -> None:
    """Draw DET curves ``(label, points)`` on normal-deviate axes into one PNG."""
    figure = new_figure()
    axes = figure.add_subplot(1, 1, 1)
    for label, points in curves:
        # clip so that rates of exactly 0 or 1 map to finite positions off the axes
        fpr = norm.ppf(np.clip(points.fpr, 1e-6, 1 - 1e-6))
        fnr = norm.ppf(np.clip(points.fnr, 1e-6, 1 - 1e-6))
        axes.plot(fpr, fnr, label=f"{label} (EER {100 * eer_from_det(points):.2f}%)")
    ticks = norm.ppf(_DET_TICKS)
    tick_labels = [f"{100 * tick:g}" for tick in _DET_TICKS]
    axes.set_xticks(ticks, tick_labels)
    axes.set_yticks(ticks, tick_labels)
    axes.set_xlim(ticks[0], ticks[-1])
    axes.set_ylim(ticks[0], ticks[-1])
    axes.plot([ticks[0], ticks[-1]], [ticks[0], ticks[-1]], color="0.7", linewidth=0.8)
    axes.set_xlabel("false-alarm rate [%]")
    axes.set_ylabel("miss rate [%]")
    axes.grid(True)
    axes.legend(loc="upper right", fontsize="small")
    if title:
        axes.set_title(title)
    save_figure(figure, png_path)


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, png_path: str,
                         title: str = "") -> None:
    """Histograms of target and nontarget scores (each normalised to unit area) in one PNG."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    edges = np.histogram_bin_edges(scores, bins=_HISTOGRAM_BINS)
    figure = new_figure()
    axes = figure.add_subplot(1, 1, 1)
    for mask, name, colour in ((~labels, "nontarget", "tab:blue"), (labels, "target", "tab:red")):
        if mask.any():
            axes.hist(scores[mask], bins=edges, density=True, alpha=0.5, color=colour,
                      label=f"{name} ({int(mask.sum())} trials)")
    axes.set_xlabel("score")
    axes.set_ylabel("density")
    axes.legend(loc="upper left", fontsize="small")
    if title:
        axes.set_title(title)
    save_figure(figure, png_path)
