"""Writing a figure to PNG: the one rendering path every picture of the report goes through.

Every figure is a bare `matplotlib.figure.Figure` drawn on its own Agg canvas. pyplot is never imported,
so no global figure registry, backend switch or rcParams change leaks into the caller (training loops,
notebooks, tests); a figure is freed as soon as its function returns, with nothing left to close. Files
are written to a temporary name and renamed, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Renders `fig` to PNG at `path` through a temporary file in the same folder, then renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
