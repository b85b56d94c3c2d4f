"""Pictures for the retrieval report: a result gallery, a per-class bar chart and a 2-D projection.

Every figure is a bare `matplotlib.figure.Figure` drawn on its own Agg canvas. pyplot is never imported,
so no global figure registry, backend switch or rcParams change leaks into the caller (training loops,
notebooks, tests); a figure is freed as soon as its function returns, with nothing left to close. Files
are written to a temporary name and renamed, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rejepa_jax.retrieval.exact_search import l2_normalise

# Border colours of the gallery: relevant results in green, the others in red, the query in white (a
# frame of the same width, so every tile has the same geometry but only results carry a colour).
RELEVANT_COLOUR = (0.10, 0.70, 0.20)
IRRELEVANT_COLOUR = (0.85, 0.10, 0.10)
QUERY_COLOUR = (1.0, 1.0, 1.0)
# Multi-label partial matches: from orange (few labels shared) to yellow (almost all), linearly in the
# Jaccard fraction; both stay apart from the full-match green and the no-match red.
PARTIAL_LOW_COLOUR = (1.00, 0.50, 0.00)
PARTIAL_HIGH_COLOUR = (0.95, 0.90, 0.00)

# Per-band percentile stretch of images that are not already in display range.
STRETCH_PERCENTILES = (2.0, 98.0)

_DPI = 100


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Renders `fig` to PNG at `path` through a temporary file in the same folder, then renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=_DPI, facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------
# Images.


def _stretch_band(band: np.ndarray) -> np.ndarray:
    """One band mapped to [0, 1] between its 2nd and 98th percentiles; constant or empty bands go to 0."""
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return np.zeros(band.shape, dtype=np.float32)
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if hi <= lo:
        return np.zeros(band.shape, dtype=np.float32)
    out = (band - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)


def to_display(
    image: np.ndarray,
    *,
    bands: Sequence[int] = (),
    value_range: Sequence[float] = (),
) -> np.ndarray:
    """An image [H, W] or [H, W, C] as float32 RGB [H, W, 3] in [0, 1], ready for `imshow`.

    `bands` picks the bands shown as (red, green, blue), or one band shown in grey, by index into the
    image (`eval.display_bands`; e.g. B04, B03, B02 of a Sentinel-2 stack for true colour); () keeps
    the first three. `value_range` (low, high) in the image's raw units maps every shown band linearly
    to [0, 1] with the same two numbers, clipped (`eval.display_range`): the bands keep their relative
    brightness, so colours are true colours and comparable between tiles.

    Without `value_range`: three-band uint8, or three-band float already inside [0, 1], is taken as
    display-ready RGB and only rescaled. Anything else is not in display range: multispectral
    reflectances fill a small part of their numeric range (and S1 backscatter in dB is negative), so a
    raw display is black or saturated. Those images show their first three bands (one band, or two,
    show the first band in grey) after a 2–98 percentile stretch of each band of this image alone,
    which clips a few outliers (clouds, saturated or no-data pixels) and fills the display range. That
    stretch is per band because bands of different sensors have unrelated scales; its colours are
    therefore for looking, not for comparing radiometry between tiles.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"Need an image [H, W] or [H, W, C]: got shape {image.shape}.")
    if len(bands):
        bands = [int(b) for b in bands]
        if len(bands) not in (1, 3) or not all(-image.shape[2] <= b < image.shape[2] for b in bands):
            raise ValueError(f"Display bands {bands} must be 1 or 3 indices into {image.shape[2]} bands.")
        image = image[:, :, bands]
    if len(value_range):
        return _linear_stretch(image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1], value_range)
    if image.shape[2] == 3:
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        in_range = np.issubdtype(image.dtype, np.floating) and np.all((image >= 0.0) & (image <= 1.0))
        if in_range:
            return image.astype(np.float32)
    bands = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
    stretched = np.stack(
        [_stretch_band(bands[:, :, i].astype(np.float64)) for i in range(bands.shape[2])], -1
    )
    if stretched.shape[2] == 1:
        stretched = np.repeat(stretched, 3, axis=2)
    return stretched


def _linear_stretch(bands: np.ndarray, value_range: Sequence[float]) -> np.ndarray:
    """Bands [H, W, 1 or 3] mapped by (x - low) / (high - low) into [0, 1], clipped; one band in grey."""
    if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
        raise ValueError(f"Need a display range (low, high) with high > low: got {tuple(value_range)}.")
    low, high = float(value_range[0]), float(value_range[1])
    out = (bands.astype(np.float64) - low) / (high - low)
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def relevance_colour(fraction: float) -> tuple[float, float, float]:
    """Border colour of a result sharing `fraction` (Jaccard |Yq∩Yi|/|Yq∪Yi|) of the labels in play.

    1 is green and 0 red, as for single-label data; a partial match runs linearly from orange (just
    above 0) to yellow (just below 1), so the share can be read from the colour.
    """
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"A shared-label fraction lies in [0, 1]: got {fraction}.")
    if fraction == 1.0:
        return RELEVANT_COLOUR
    if fraction == 0.0:
        return IRRELEVANT_COLOUR
    low, high = np.asarray(PARTIAL_LOW_COLOUR), np.asarray(PARTIAL_HIGH_COLOUR)
    return tuple(float(v) for v in low + fraction * (high - low))


def _framed(image: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """The display image inside a solid frame about 7 % of its longer side wide (at least 2 pixels)."""
    rgb = to_display(image)
    width = max(2, round(0.07 * max(rgb.shape[:2])))
    padded = np.empty((rgb.shape[0] + 2 * width, rgb.shape[1] + 2 * width, 3), dtype=np.float32)
    padded[:] = colour
    padded[width:-width, width:-width] = rgb
    return padded


def _show(ax, image: np.ndarray, title: str) -> None:
    # Small tiles are blown up: show their pixels as squares rather than blurred.
    ax.imshow(image, interpolation="nearest" if max(image.shape[:2]) < 64 else None)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def gallery(
    path: str | os.PathLike,
    query_images: Sequence[np.ndarray],
    result_images: Sequence[Sequence[np.ndarray]],
    relevant: Sequence[Sequence[bool]] | np.ndarray,
    scores: Sequence[Sequence[float]] | np.ndarray,
    query_titles: Sequence[str],
    result_titles: Sequence[Sequence[str]],
    *,
    max_queries: int = 8,
    shared: Sequence[Sequence[tuple[int, int]]] | np.ndarray | None = None,
) -> Path:
    """A PNG grid, one row per query (the first `max_queries`): the query, then its ranked results.

    Each result sits in a thick border, green when relevant and red otherwise, so a glance shows where
    the ranking fails; its title is its label, a tick or cross (for readers who cannot tell red from
    green) and its score. Images are [H, W, C] arrays; see `to_display` for how they are shown.

    Multi-label data passes `shared`: per result (|Yq∩Yi|, |Yq∪Yi|), the labels it shares with the
    query and the labels either holds. The border then grades partial matches (`relevance_colour` of
    the Jaccard fraction: green all shared, orange to yellow some, red none), the title says e.g.
    "~ 2/3 shared", and a legend under the grid explains the colours.
    """
    num_queries = len(query_images)
    if not (len(result_images) == len(relevant) == len(scores) == len(query_titles) == len(result_titles)):
        raise ValueError(
            "query_images, result_images, relevant, scores and both title lists need one entry per query."
        )
    if num_queries == 0 or max_queries < 1:
        raise ValueError(f"Need at least one query and max_queries >= 1: got {num_queries}, {max_queries}.")
    rows = min(num_queries, max_queries)
    for q in range(rows):
        if not (len(result_images[q]) == len(relevant[q]) == len(scores[q]) == len(result_titles[q])):
            raise ValueError(
                f"Query {q}: result_images, relevant, scores and result_titles differ in length."
            )
        if shared is not None and len(shared[q]) != len(result_images[q]):
            raise ValueError(f"Query {q}: shared and result_images differ in length.")
    cols = 1 + max(len(result_images[q]) for q in range(rows))

    # Room above each tile for its title: 0.2 inch per line (labels of multi-label data take more).
    title_lines = max(
        [2 + str(query_titles[q]).count("\n") for q in range(rows)]
        + [2 + str(title).count("\n") for q in range(rows) for title in result_titles[q]]
    )
    row_inches = 1.55 + 0.2 * title_lines
    legend_columns = 4 if cols >= 5 else 2  # Narrow grids stack the key in two rows.
    legend_inches = 0.0 if shared is None else (0.45 if legend_columns == 4 else 0.65)
    height = row_inches * rows + legend_inches
    fig = Figure(figsize=(1.6 * cols, height), dpi=_DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=(0.01 * row_inches * rows + legend_inches) / height,
        top=1 - 0.2 * title_lines / height,
        wspace=0.06,
        hspace=0.2 * title_lines,
    )
    for q in range(rows):
        _show(axes[q, 0], _framed(query_images[q], QUERY_COLOUR), f"query\n{query_titles[q]}")
        for j, image in enumerate(result_images[q]):
            if shared is None:
                hit = bool(relevant[q][j])
                colour = RELEVANT_COLOUR if hit else IRRELEVANT_COLOUR
                mark = "✓" if hit else "✗"
            else:
                common, union = (int(v) for v in shared[q][j])
                fraction = common / union if union else 0.0
                colour = relevance_colour(fraction)
                mark = f"{'✓' if fraction == 1.0 else '~' if common else '✗'} {common}/{union} shared"
            title = f"{result_titles[q][j]}\n{mark} {float(scores[q][j]):.3f}"
            _show(axes[q, j + 1], _framed(image, colour), title)
        for j in range(len(result_images[q]) + 1, cols):
            axes[q, j].set_axis_off()
    if shared is not None:
        _shared_legend(fig, legend_inches / height, legend_columns)
    return _save(fig, path)


def _shared_legend(fig: Figure, height: float, columns: int) -> None:
    """The border-colour key of a multi-label gallery, in a bottom strip `height` (figure fraction) tall."""
    handles = [
        Patch(facecolor=RELEVANT_COLOUR, label="✓ every label shared"),
        Patch(facecolor=relevance_colour(2 / 3), label="~ some shared (2/3)"),
        Patch(facecolor=relevance_colour(1 / 3), label="~ some shared (1/3)"),
        Patch(facecolor=IRRELEVANT_COLOUR, label="✗ none shared"),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0, 0.0, height),
        ncol=columns,
        fontsize=7,
        frameon=False,
        title="border: shared labels |query ∩ result| / |query ∪ result|",
        title_fontsize=7,
    )


# ---------------------------------------------------------------------------------------------------
# Per-class metric.


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

    fig = Figure(figsize=(7.5, 1.0 + 0.24 * num), dpi=_DPI, layout="constrained")
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
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# 2-D projection.


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
    fig = Figure(figsize=(7.0 + 2.3 * legend_cols, 6.5), dpi=_DPI, layout="constrained")
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
    return _save(fig, path)
