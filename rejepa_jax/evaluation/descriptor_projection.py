"""The 2-D projection: the L2-normalised descriptors on their first two principal axes, coloured by class.

Holds its own small PCA (`pca_2d`, two axes from the smaller Gram matrix) and a class palette that
stays distinct up to 60 classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from rejepa_jax.evaluation.figure_png import DPI, save_png
from rejepa_jax.retrieval.exact_search import l2_normalise


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates [N, 2] on the first two principal axes of x [N, D], and their explained-variance ratios.

    Found from the eigenvectors of the smaller of the two Gram matrices of the centred rows (D × D or
    N × N), which costs far less than a full SVD when only two axes are needed. Each axis's sign is fixed
    (its largest loading positive) so the same data always gives the same picture. Missing axes (fewer
    than two directions with variance) give coordinate 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"Need x [N, D] with N >= 1: got {x.shape}.")
    centred = x - x.mean(axis=0)
    num, dim = centred.shape
    if dim <= num:
        eigvals, eigvecs = np.linalg.eigh(centred.T @ centred)
        top = np.argsort(eigvals)[::-1][:2]
        eigvals, loadings = np.clip(eigvals[top], 0.0, None), eigvecs[:, top]
    else:
        eigvals, eigvecs = np.linalg.eigh(centred @ centred.T)
        top = np.argsort(eigvals)[::-1][:2]
        eigvals = np.clip(eigvals[top], 0.0, None)
        sv = np.sqrt(eigvals)
        loadings = (centred.T @ eigvecs[:, top]) / np.where(sv > 0, sv, 1.0)
    total = float(np.sum(centred**2))
    informative = eigvals > 1e-12 * max(total, 1e-300)
    coords = np.zeros((num, 2))
    ratios = np.zeros(2)
    for axis in np.flatnonzero(informative):
        loading = loadings[:, axis]
        sign = 1.0 if loading[np.argmax(np.abs(loading))] >= 0 else -1.0
        coords[:, axis] = sign * (centred @ loading)
        ratios[axis] = eigvals[axis] / total
    return coords, ratios


def _class_colours(n: int) -> np.ndarray:
    """n distinct RGBA colours: qualitative palettes (tab10, or tab20 + tab20b + tab20c up to 60
    classes), an even spread of turbo beyond that."""
    if n <= 10:
        return matplotlib.colormaps["tab10"](np.arange(n))
    if n <= 60:
        names = ("tab20", "tab20b", "tab20c")
        palette = np.concatenate([matplotlib.colormaps[name](np.arange(20)) for name in names])
        return palette[:n]
    return matplotlib.colormaps["turbo"](np.linspace(0.03, 0.97, n))


def projection_2d(
    path: str | os.PathLike,
    descriptors: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    method: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """A scatter of the L2-normalised descriptors [N, D] on their first two principal axes, by class.

    `labels` are class indices [N] into `class_names`; multi-hot rows [N, C] are coloured by their first
    label (an item without labels is grey), since a point can only have one colour. Above `max_points`
    a fixed random subset (from `seed`) is drawn and the PCA is fitted on it, which keeps big archives
    fast and the picture reproducible. Only "pca" is implemented.
    """
    if method != "pca":
        raise ValueError(f"Unknown projection method {method!r}; only 'pca' is implemented.")
    descriptors = np.asarray(descriptors)
    labels = np.asarray(labels)
    if descriptors.ndim != 2 or len(labels) != len(descriptors) or len(descriptors) == 0:
        raise ValueError(f"Need descriptors [N, D] and N labels: got {descriptors.shape} and {labels.shape}.")
    if not np.all(np.isfinite(descriptors)):
        raise ValueError("Descriptors contain NaN or inf.")
    if labels.ndim == 2:
        has_label = (labels != 0).any(axis=1)
        labels = np.where(has_label, np.argmax(labels != 0, axis=1), -1)
    elif labels.ndim != 1:
        raise ValueError(f"Need labels [N] or multi-hot [N, C]: got {labels.shape}.")
    labels = labels.astype(np.int64)
    if labels.max() >= len(class_names) or labels.min() < -1:
        raise ValueError(f"Labels must index class_names ({len(class_names)} classes).")
    num = len(descriptors)
    if max_points < 1:
        raise ValueError(f"max_points must be positive: got {max_points}.")
    keep = np.arange(num)
    if num > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(num, size=max_points, replace=False))
    coords, ratios = pca_2d(l2_normalise(descriptors[keep].astype(np.float64)))
    shown_labels = labels[keep]

    present = [c for c in range(len(class_names)) if np.any(shown_labels == c)]
    legend_cols = max(1, math.ceil((len(present) + 1) / 28))
    fig = Figure(figsize=(7.0 + 2.3 * legend_cols, 6.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    size = 14 if len(keep) <= 1000 else 5
    colours = _class_colours(len(class_names))
    for c in present:
        at = shown_labels == c
        ax.scatter(
            coords[at, 0],
            coords[at, 1],
            s=size,
            color=colours[c],
            alpha=0.75,
            linewidths=0,
            label=class_names[c],
        )
    if np.any(shown_labels == -1):
        at = shown_labels == -1
        ax.scatter(
            coords[at, 0], coords[at, 1], s=size, color="0.6", alpha=0.75, linewidths=0, label="(no label)"
        )
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
        markerscale=2.5 if size < 10 else 1.5,
        ncol=legend_cols,
        frameon=False,
    )
    ax.set_xlabel(f"PC1 ({100 * ratios[0]:.1f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratios[1]:.1f} % of variance)")
    shown = f"{len(keep)} of {num}" if len(keep) < num else f"{num}"
    ax.set_title(f"PCA of L2-normalised descriptors ({shown} points)", fontsize=10)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
