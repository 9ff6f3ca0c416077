"""Off-screen matplotlib figures written as PNG files, atomically.

matplotlib is a dependency of the package; it is imported only when a figure is
made, so nothing else pays for it.
"""
from __future__ import annotations

from typing import Tuple

from wespeaker_py.utils.file_utils import atomic_path


def new_figure(size: Tuple[float, float] = (6.0, 6.0)):
    """A figure drawn by the Agg canvas: no screen, no global pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, png_path: str) -> None:
    """Write ``figure`` to ``png_path`` atomically (a reader never sees half a file)."""
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
