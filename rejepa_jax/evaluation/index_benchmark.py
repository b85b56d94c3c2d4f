"""Retrieval benchmark of an exported index (or of a checkpoint, exactly): metrics, index quality
and speed, baselines evaluated the same way, and pictures; the library behind `rejepa_jax.evaluate`.

The report holds, for the model and each baseline, P@K, R@K, mAP@K under all three normalisations,
NDCG@K (and CSMAE F1@K for multi-label data) from exact search; for the ScaNN index the same
metrics from its own ranking plus recall@K against exact search, batch QPS, single-query p50/p99
latency and bytes per vector. Pictures: a gallery of queries with their top results (borders mark
relevant results; for multi-label data graded by the share of labels in common), a per-class P@K
chart (multi-label: every class, over the queries holding it) and a 2-D projection of the archive
descriptors. Images are shown as `eval.display_bands` / `eval.display_range` say (true colour for
multispectral data).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from rejepa_jax import config_lib, sharding, trainer
from rejepa_jax import state as state_lib
from rejepa_jax.data import augment
from rejepa_jax.data.decode import DecodeOptions, decode_record
from rejepa_jax.data.sources import make_source
from rejepa_jax.evaluation import figures, report_writer, retrieval_metrics
from rejepa_jax.evaluation.retrieval_metrics import l2_normalise
from rejepa_jax.retrieval import index_speed, scann_index
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.embedding import COLOR_HISTOGRAM, SplitEmbedder
from rejepa_jax.retrieval.exporter import config_for_present_devices
from rejepa_jax.retrieval.index_searcher import IndexSearcher
from rejepa_jax.retrieval.manifest import SCANN_DIR

BASELINES = (COLOR_HISTOGRAM, "random_init")
MODEL = "model"  # Key of the model's descriptors while embedding.
REPORT_TITLE = "REJEPA retrieval report"


@dataclasses.dataclass
class Archive:
    """What is searched: archive descriptors and the model and data that made them."""

    config: ml_collections.ConfigDict  # With archive_split set to the indexed split.
    params: Any  # Encoder params that embed the queries.
    descriptors: np.ndarray  # [N, D], L2-normalised (and whitened when the index is)
    labels: np.ndarray
    positions: np.ndarray  # Row -> position in the archive split.
    class_names: list[str]
    index: IndexSearcher | None  # None in exact mode straight from a checkpoint.
    meta: dict[str, Any]


def default_report_dir(
    queries: str, *, index_dir: str | Path | None = None, workdir: str | Path | None = None
) -> Path:
    """Where `rejepa_jax.evaluate` writes its report unless told: `INDEX.eval_<queries>` beside an
    index (never inside it: an index holds only its listed files), `RUN/eval_<queries>` in a run."""
    stem = Path(queries).stem
    if index_dir is not None:
        index = Path(os.path.abspath(index_dir))
        return index.with_name(f"{index.name}.eval_{stem}")
    return Path(workdir) / f"eval_{stem}"


def check_report_dir(out_dir: str | Path, index_dir: str | Path) -> None:
    """Refuses a report folder inside an index (the index would then fail its extra-file check)."""
    out, index = Path(os.path.realpath(out_dir)), Path(os.path.realpath(index_dir))
    if out == index or out.is_relative_to(index):
        raise ValueError(
            f"Report folder {out_dir} is inside the index {index_dir}, which must hold only its own "
            f"files; write the report beside it, e.g. {default_report_dir('query', index_dir=index_dir)}."
        )


def archive_from_index(index_dir: str | Path, overrides: tuple[str, ...] = ()) -> Archive:
    """An exported index: descriptors from disk, queries embedded with the bundled encoder.

    Everything comes from the checked index files; the encoder is refused unless its fingerprint is
    the manifest's (`IndexSearcher.encoder_params`).
    """
    index = IndexSearcher(index_dir)
    config = config_for_present_devices(config_lib.apply_overrides(index.config, list(overrides)))
    config.unlock()
    config.data.archive_split = _split_spec(config, index.manifest.split)
    config.lock()
    return Archive(
        config=config,
        params=index.encoder_params(),
        descriptors=np.asarray(index.descriptors),
        labels=index.labels,
        positions=index.positions,
        class_names=index.manifest.class_names,
        index=index,
        meta={
            "index": str(Path(index_dir).absolute()),
            "num_index": int(index.manifest.count),
            "checkpoint_step": index.manifest.checkpoint_step,
            "encoder": index.manifest.encoder,
            "descriptor": index.manifest.normalisation,
        },
    )


def archive_from_workdir(
    workdir: str | Path,
    *,
    encoder: str | None = None,
    step: int | None = None,
    overrides: tuple[str, ...] = (),
) -> Archive:
    """Exact mode without an index: restore a checkpoint and embed the archive split in memory."""
    config = config_lib.apply_overrides(config_lib.load_json(Path(workdir) / "config.json"), list(overrides))
    config = config_for_present_devices(config)
    encoder = state_lib.descriptor_encoder(config, encoder)
    restored_step, params = trainer.restore_params(config, workdir, step=step)
    params = state_lib.select_encoder(params, encoder)
    run = trainer.build_run(config)
    archive = SplitEmbedder(config, run.encoder, run.mesh).embed_split("archive", {MODEL: params})
    source = make_source(config.data, "archive")
    return Archive(
        config=config,
        params=params,
        descriptors=l2_normalise(archive.pooled[MODEL]),
        labels=archive.labels,
        positions=archive.index,
        class_names=list(getattr(source, "class_names", None) or []),
        index=None,
        meta={
            "workdir": str(Path(workdir).absolute()),
            "checkpoint_step": restored_step,
            "encoder": encoder,
            "descriptor": "mean-pooled tokens, L2-normalised",
        },
    )


def evaluate(
    archive: Archive,
    queries: str,
    out_dir: str | Path,
    *,
    ks: list[int],
    exact_only: bool = False,
    baselines: tuple[str, ...] = BASELINES,
    gallery_queries: int = 8,
) -> dict[str, Any]:
    """Runs the whole benchmark and writes the report folder; returns the report dict."""
    out_dir = Path(out_dir)
    if archive.index is not None:
        check_report_dir(out_dir, archive.index.directory)
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"Unknown baselines {sorted(unknown)}; choose from {BASELINES}.")
    exact_only = exact_only or archive.index is None
    config = archive.config
    if queries != "query":
        config = config_lib.apply_overrides(
            config_lib.from_dict(config.to_dict()), [f"data.query_split={queries}"]
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    multi_label, k_max = config.data.multi_label, max(ks)

    # ---- Query descriptors, embedded like the archive ----
    run = trainer.build_run(config)
    params = jax.device_put(archive.params, sharding.replicated(run.mesh))
    embedder = SplitEmbedder(config, run.encoder, run.mesh)
    query_split = embedder.embed_split("query", {MODEL: params})
    query_desc = l2_normalise(query_split.pooled[MODEL])
    if archive.index is not None and archive.index.whitening is not None:
        query_desc = archive.index.whitening.apply(query_desc)
    archive_desc = archive.descriptors
    index = archive.index
    logging.info("Evaluating %d queries against %d archive descriptors.", len(query_desc), len(archive_desc))

    descriptors: dict[str, dict[str, float]] = {}
    per_query: dict[str, np.ndarray] = {}
    _, exact_indices = retrieval_metrics.exact_search(query_desc, archive_desc, k_max)
    name = config.method  # "rejepa" or "mae": the rows of the report.
    descriptors[f"{name} (exact)"] = retrieval_metrics.ranking_report(
        exact_indices, query_split.labels, archive.labels, ks, multi_label=multi_label, per_query=per_query
    )
    index_section = None
    ranking = exact_indices
    if not exact_only:
        approx_indices, _ = scann_index.search(index.searcher, query_desc, k_max, index.settings)
        descriptors[f"{name} (index)"] = retrieval_metrics.ranking_report(
            approx_indices, query_split.labels, archive.labels, ks, multi_label=multi_label
        )
        speed = index_speed.measure_speed(
            index.searcher, query_desc, k_max, index.settings, index_dir=index.directory / SCANN_DIR
        )
        index_section = {
            "k": k_max,
            "bytes_per_vector": speed["bytes_per_vector"],
            **{f"recall@{k}": recall_vs_exact_at_k(approx_indices, exact_indices, k) for k in ks},
            "runs": [
                {
                    "settings": index.manifest.scann,
                    "recall_vs_exact": recall_vs_exact_at_k(approx_indices, exact_indices, k_max),
                    "batch_qps": speed["batch_qps"],
                    "latency_ms_p50": speed["latency_p50_ms"],
                    "latency_ms_p99": speed["latency_p99_ms"],
                    "bytes_per_vector": speed["bytes_per_vector"],
                }
            ],
        }
        ranking = approx_indices

    # ---- Baselines, embedded from the images and ranked by exact search ----
    if baselines:
        descriptors.update(_baselines(config, run, embedder, baselines, ks))

    # ---- Pictures ----
    query_source, archive_source = make_source(config.data, "query"), make_source(config.data, "archive")
    names = archive.class_names or [str(i) for i in range(config.data.num_classes)]
    k_show = min(5, k_max)
    shown_ranking = ranking[:, :k_show]
    relevant = _relevance(query_split.labels, archive.labels, shown_ranking, multi_label)
    shown = _pick_queries(query_split.labels, gallery_queries, multi_label)
    shared = None
    caption = f"Queries (left) and their top {k_show} results; green border: relevant, red: not."
    if multi_label:
        common, union = label_overlap(query_split.labels[shown], archive.labels, shown_ranking[shown])
        shared = np.stack([common, union], axis=-1)
        caption = (
            f"Queries (left) and their top {k_show} results. Border and title: labels shared with the "
            "query over the labels either holds (Jaccard |Yq∩Yi|/|Yq∪Yi|); green all shared, orange "
            "to yellow some (more is yellower), red none."
        )
    figure_list = [
        {
            "caption": caption,
            "path": figures.gallery(
                out_dir / "gallery.png",
                [_display_image(query_source, int(query_split.index[q]), config) for q in shown],
                [
                    [
                        _display_image(archive_source, int(archive.positions[r]), config)
                        for r in shown_ranking[q]
                    ]
                    for q in shown
                ],
                relevant[shown],
                np.take_along_axis(query_desc[shown] @ archive_desc.T, shown_ranking[shown], axis=1),
                [_label_text(query_split.labels[q], names) for q in shown],
                [[_label_text(archive.labels[r], names) for r in shown_ranking[q]] for q in shown],
                max_queries=gallery_queries,
                shared=shared,
            ).name,
        }
    ]
    k_class = 10 if 10 in ks else ks[0]
    values = per_class_mean(per_query[f"p@{k_class}"], query_split.labels, len(names), multi_label)
    caption = f"P@{k_class} per query class (exact search, {name})."
    if multi_label:
        caption = (
            f"P@{k_class} per class (exact search, {name}; relevant = shares at least one label with the "
            "query): the mean over the queries that hold the class; n/a: no query holds it."
        )
    figure_list.append(
        {
            "caption": caption,
            "path": figures.per_class_bar(
                out_dir / "per_class.png", names, values, metric_name=f"P@{k_class}"
            ).name,
        }
    )
    figure_list.append(
        {
            "caption": "2-D PCA projection of the archive descriptors, coloured by class.",
            "path": figures.projection_2d(
                out_dir / "projection.png", archive_desc, archive.labels, names
            ).name,
        }
    )

    report = {
        "meta": {
            **archive.meta,
            "num_queries": len(query_desc),
            "num_archive": len(archive_desc),
            "queries": queries,
            "relevance": "shares at least one label" if multi_label else "same class",
            "search": "exact cosine (dot product of L2-normalised descriptors)"
            + ("" if exact_only else "; index rows use the ScaNN ranking"),
        },
        "descriptors": descriptors,
        "figures": figure_list,
    }
    if index_section is not None:
        report["index"] = index_section
    report_writer.write_report(out_dir, report, title=REPORT_TITLE)
    return report


def _split_spec(config, split: str) -> str:
    """The data-config split string behind an index's split name."""
    return {
        "archive": config.data.archive_split,
        "query": config.data.query_split,
        "train": config.data.train_split,
    }[split]


def _baselines(config, run, embedder: SplitEmbedder, baselines, ks) -> dict[str, dict[str, float]]:
    encoders = {}
    if "random_init" in baselines:
        image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
        init = functools.partial(state_lib.init_encoder_params, encoder=run.encoder, image_shape=image_shape)
        encoders["random_init"] = jax.jit(init, out_shardings=sharding.replicated(run.mesh))(
            jax.random.key(config.seed)
        )
    with_histogram = COLOR_HISTOGRAM in baselines
    query = embedder.embed_split("query", encoders, with_histogram=with_histogram)
    archive = embedder.embed_split("archive", encoders, with_histogram=with_histogram)
    return {
        name: retrieval_metrics.retrieval_report(
            query.pooled[name],
            query.labels,
            archive.pooled[name],
            archive.labels,
            ks,
            multi_label=config.data.multi_label,
        )
        for name in query.pooled
    }


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
    (`figures.to_display`); with neither, three-band images are scaled by `eval.histogram_range`
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
    return figures.to_display(image, bands=bands, value_range=value_range)


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
