"""The per-class chart: one metric (e.g. P@10) per class as horizontal bars, with the class mean.

Shows which classes a ranking serves badly, which a single mean over all queries hides.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rejepa_jax.evaluation.figure_png import DPI, save_png


def per_class_bar(
    path: str | os.PathLike,
    class_names: Sequence[str],
    values: Sequence[float] | np.ndarray,
    *,
    metric_name: str,
) -> Path:
    """Horizontal bars of a per-class metric (e.g. P@10), best class on top, with the class mean as a line.

    Horizontal, because class names are long and there may be dozens of them; the height grows with
    the number of classes. NaN values (a class without queries) are drawn as "n/a" at the bottom and
    left out of the mean.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(class_names) != len(values) or len(values) == 0:
        raise ValueError(f"Need one value per class: got {len(class_names)} names and values {values.shape}.")
    finite = np.isfinite(values)
    # Best first; NaN last; equal values keep the class order.
    order = np.lexsort((np.arange(len(values)), -np.where(finite, values, -np.inf), ~finite))
    num = len(values)
    mean = float(values[finite].mean()) if finite.any() else math.nan

    fig = Figure(figsize=(7.5, 1.0 + 0.24 * num), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(num)[::-1]  # Rank 0 at the top.
    shown = np.where(finite, values, 0.0)[order]
    ax.barh(y, shown, color="tab:blue", height=0.75)
    ax.set_yticks(y, [str(class_names[i]) for i in order], fontsize=8 if num <= 30 else 6)
    ax.set_ylim(-0.6, num - 0.4)
    top = max(1.0, float(np.max(shown))) if finite.any() else 1.0
    ax.set_xlim(min(0.0, float(np.min(shown))), top * 1.1)
    for rank, i in enumerate(order):
        text = f"{values[i]:.3f}" if finite[i] else "n/a"
        ax.text(max(shown[rank], 0.0) + 0.01 * top, y[rank], text, va="center", fontsize=6)
    if finite.any():
        ax.axvline(mean, color="black", linestyle="--", linewidth=1.2, label=f"mean {mean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(metric_name)
    ax.set_title(f"{metric_name} per class", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_png(fig, path)
