"""Off-screen matplotlib figures written as image files, atomically.

matplotlib is a dependency of the package; it is imported only when a figure is
made, so nothing else pays for it.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from wespeaker_py.utils.atomic_files import atomic_path

# formats matplotlib lists that are no image file to open (raw pixels), or that need LaTeX
_NOT_IMAGE_FILES = ("raw", "rgba", "pgf")


def new_figure(size: Tuple[float, float] = (6.0, 6.0)):
    """A figure drawn by the Agg canvas: no screen, no global pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def image_formats() -> List[str]:
    """The extensions (without the dot) :func:`save_figure` writes: matplotlib's image
    formats (png, pdf, svg, eps, jpg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase
    return sorted(kind for kind in FigureCanvasBase.get_supported_filetypes()
                  if kind not in _NOT_IMAGE_FILES)


def image_format(path: str) -> Optional[str]:
    """The format ``path``'s extension names (``x.PDF``: ``pdf``); None when it names none
    of :func:`image_formats`."""
    kind = os.path.splitext(path)[1][1:].lower()
    return kind if kind in image_formats() else None


def save_figure(figure, path: str) -> None:
    """Write ``figure`` to ``path`` atomically (a reader never sees half a file), in the
    format its extension names (:func:`image_format`), else as PNG."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=image_format(path) or "png")
