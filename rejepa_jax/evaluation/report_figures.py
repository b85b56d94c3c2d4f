"""The report's pictures: a gallery of queries and their top results, P@K per class, a 2-D projection.

Kept apart from the report itself (`retrieval_report`), which computes the numbers: this module
only chooses what to show and how to label it, and draws with `result_gallery`, `per_class_chart`
and `descriptor_projection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from rejepa_jax.data import augment
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.sources import make_source
from rejepa_jax.evaluation import descriptor_projection, image_display, per_class_chart, result_gallery
from rejepa_jax.retrieval.embedding import SplitEmbeddings


def write_figures(
    out_dir: Path,
    config: ml_collections.ConfigDict,
    query_split: SplitEmbeddings,
    query_desc: np.ndarray,
    archive_desc: np.ndarray,
    archive_labels: np.ndarray,
    archive_positions: np.ndarray,
    class_names: list[str],
    ranking: np.ndarray,
    per_query: dict[str, np.ndarray],
    ks: list[int],
    *,
    method: str,
    gallery_queries: int,
) -> list[dict[str, Any]]:
    """Draws gallery.png, per_class.png and projection.png into `out_dir`; returns their captions.

    `ranking` [Q, K] is the one the report's gallery shows (the index's when there is one);
    `per_query` holds the exact search's per-query metrics.
    """
    multi_label = config.data.multi_label
    query_source, archive_source = make_source(config.data, "query"), make_source(config.data, "archive")
    names = class_names or [str(i) for i in range(config.data.num_classes)]
    k_show = min(5, max(ks))
    shown_ranking = ranking[:, :k_show]
    relevant = _relevance(query_split.labels, archive_labels, shown_ranking, multi_label)
    shown = _pick_queries(query_split.labels, gallery_queries, multi_label)
    shared = None
    caption = f"Queries (left) and their top {k_show} results; green border: relevant, red: not."
    if multi_label:
        common, union = label_overlap(query_split.labels[shown], archive_labels, shown_ranking[shown])
        shared = np.stack([common, union], axis=-1)
        caption = (
            f"Queries (left) and their top {k_show} results. Border and title: labels shared with the "
            "query over the labels either holds (Jaccard |Yq∩Yi|/|Yq∪Yi|); green all shared, orange "
            "to yellow some (more is yellower), red none."
        )
    figure_list = [
        {
            "caption": caption,
            "path": result_gallery.gallery(
                out_dir / "gallery.png",
                [_display_image(query_source, int(query_split.index[q]), config) for q in shown],
                [
                    [
                        _display_image(archive_source, int(archive_positions[r]), config)
                        for r in shown_ranking[q]
                    ]
                    for q in shown
                ],
                relevant[shown],
                np.take_along_axis(query_desc[shown] @ archive_desc.T, shown_ranking[shown], axis=1),
                [_label_text(query_split.labels[q], names) for q in shown],
                [[_label_text(archive_labels[r], names) for r in shown_ranking[q]] for q in shown],
                max_queries=gallery_queries,
                shared=shared,
            ).name,
        }
    ]
    k_class = 10 if 10 in ks else ks[0]
    values = per_class_mean(per_query[f"p@{k_class}"], query_split.labels, len(names), multi_label)
    caption = f"P@{k_class} per query class (exact search, {method})."
    if multi_label:
        caption = (
            f"P@{k_class} per class (exact search, {method}; relevant = shares at least one label with the "
            "query): the mean over the queries that hold the class; n/a: no query holds it."
        )
    figure_list.append(
        {
            "caption": caption,
            "path": per_class_chart.per_class_bar(
                out_dir / "per_class.png", names, values, metric_name=f"P@{k_class}"
            ).name,
        }
    )
    figure_list.append(
        {
            "caption": "2-D PCA projection of the archive descriptors, coloured by class.",
            "path": descriptor_projection.projection_2d(
                out_dir / "projection.png", archive_desc, archive_labels, names
            ).name,
        }
    )
    return figure_list


def _relevance(query_labels, archive_labels, ranking, multi_label) -> np.ndarray:
    if multi_label:
        return (query_labels[:, None, :] * archive_labels[ranking]).sum(-1) > 0
    return archive_labels[ranking] == query_labels[:, None]


def label_overlap(
    query_labels: np.ndarray, archive_labels: np.ndarray, ranking: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|Yq∩Yi| and |Yq∪Yi| [Q, K] of every ranked result, from multi-hot labels [Q, C] and [N, C].

    Their ratio (Jaccard) grades partial matches in the gallery: a result sharing one of three labels
    in play is a different failure from one sharing none.
    """
    query = (np.asarray(query_labels) != 0)[:, None, :]
    result = (np.asarray(archive_labels) != 0)[np.asarray(ranking)]
    return (query & result).sum(-1), (query | result).sum(-1)


def per_class_mean(
    values: np.ndarray, query_labels: np.ndarray, num_classes: int, multi_label: bool
) -> np.ndarray:
    """The mean of a per-query value [Q] over the queries of each class [C]; NaN where no query is.

    A multi-label query counts for every class it holds, so each of the classes is scored on all the
    queries in which it appears, rare ones included.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(query_labels)
    if multi_label:
        holds = labels[:, :num_classes] != 0
    else:
        holds = labels[:, None] == np.arange(num_classes)[None, :]
    counts = holds.sum(axis=0)
    sums = values @ holds
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _pick_queries(labels: np.ndarray, count: int, multi_label: bool) -> np.ndarray:
    """Up to `count` queries spread over the classes, then the rest in split order.

    Single-label: the first query of each class, in class order. Multi-label: greedily the query that
    holds the most classes not yet shown (ties: the earlier one), so a few rows show as many of the
    classes as they can, rare ones included.
    """
    labels = np.asarray(labels)
    if multi_label:
        holds = labels != 0
        covered = np.zeros(holds.shape[1], dtype=bool)
        firsts: list[int] = []
        while len(firsts) < count:
            gain = (holds & ~covered).sum(axis=1)
            gain[firsts] = -1
            best = int(np.argmax(gain)) if len(gain) else 0
            if not len(gain) or gain[best] <= 0:
                break
            firsts.append(best)
            covered |= holds[best]
    else:
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    taken = set(firsts)
    rest = [i for i in range(len(labels)) if i not in taken]
    return np.array((firsts + rest)[:count], dtype=np.int64)


def _display_image(source, position: int, config) -> np.ndarray:
    """The image at `position` of a split, resized like the model saw it, as display RGB in [0, 1].

    `eval.display_bands` picks the bands shown and `eval.display_range` stretches them linearly
    (`image_display.to_display`); with neither, three-band images are scaled by `eval.histogram_range`
    (their known 8-bit range) so colours look as captured, and other band counts get the per-band
    percentile stretch.
    """
    record = source[position]
    image = augment.resize(
        decode_record(
            record, config.data.channels, tuple(config.data.bands), DecodeOptions.from_config(config.data)
        ),
        config.data.image_size,
    )
    bands, value_range = tuple(config.eval.display_bands), tuple(config.eval.display_range)
    if not bands and not value_range and image.shape[-1] == 3:
        value_range = tuple(config.eval.histogram_range)
    return image_display.to_display(image, bands=bands, value_range=value_range)


# Longest class name a gallery title shows (BigEarthNet's names run to 86 characters).
_TITLE_NAME_CHARS = 16


def _label_text(value: np.ndarray, names: list[str]) -> str:
    """A tile title: the class name, or for multi-label data the first two names (shortened) and '+n'."""
    value = np.asarray(value)
    if value.ndim == 0:
        index = int(value)
        return names[index] if 0 <= index < len(names) else str(index)
    held = np.flatnonzero(value)

    def short(i: int) -> str:
        name = names[i] if i < len(names) else str(i)
        return name if len(name) <= _TITLE_NAME_CHARS else name[: _TITLE_NAME_CHARS - 1].rstrip(" ,") + "…"

    text = "\n".join(short(int(i)) for i in held[:2])
    return text + (f" +{len(held) - 2}" if len(held) > 2 else "")
