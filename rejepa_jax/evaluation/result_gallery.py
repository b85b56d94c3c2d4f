"""The result gallery: each query beside its ranked results, framed by relevance (green, red, or graded).

One figure kind, with its colour code: `relevance_colour` grades partial multi-label matches so the
share of labels a result holds in common with its query can be read from its border.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rejepa_jax.evaluation.figure_png import DPI, save_png
from rejepa_jax.evaluation.image_display import to_display

# Border colours of the gallery: relevant results in green, the others in red, the query in white (a
# frame of the same width, so every tile has the same geometry but only results carry a colour).
RELEVANT_COLOUR = (0.10, 0.70, 0.20)
IRRELEVANT_COLOUR = (0.85, 0.10, 0.10)
QUERY_COLOUR = (1.0, 1.0, 1.0)
# Multi-label partial matches: from orange (few labels shared) to yellow (almost all), linearly in the
# Jaccard fraction; both stay apart from the full-match green and the no-match red.
PARTIAL_LOW_COLOUR = (1.00, 0.50, 0.00)
PARTIAL_HIGH_COLOUR = (0.95, 0.90, 0.00)


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
    fig = Figure(figsize=(1.6 * cols, height), dpi=DPI)
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
    return save_png(fig, path)


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
