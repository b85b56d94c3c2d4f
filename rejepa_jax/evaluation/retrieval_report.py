"""The retrieval report of an exported index (or of a checkpoint, exactly): metrics, index quality
and speed, baselines evaluated the same way, and pictures (`report_figures`); the library behind
`rejepa_jax.evaluate`.

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

from rejepa_jax import config_lib, sharding
from rejepa_jax import state as state_lib
from rejepa_jax.data.sources import make_source
from rejepa_jax.encoder_restore import restore_encoder
from rejepa_jax.evaluation import report_figures, report_writer, retrieval_metrics
from rejepa_jax.models import factory
from rejepa_jax.retrieval import index_speed, scann_index
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.embedding import COLOR_HISTOGRAM, SplitEmbedder
from rejepa_jax.retrieval.exact_search import l2_normalise
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
    restored = restore_encoder(config, workdir, encoder, step=step)
    restored_step, params, run = restored.step, restored.params, restored.run
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
    # Only the encoder and the mesh: no train-state shapes are needed to embed queries.
    config_lib.validate(config)
    mesh, encoder = sharding.make_mesh(config.mesh), factory.build_encoder(config)
    params = jax.device_put(archive.params, sharding.replicated(mesh))
    embedder = SplitEmbedder(config, encoder, mesh)
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
        descriptors.update(_baselines(config, encoder, mesh, embedder, baselines, ks))

    figure_list = report_figures.write_figures(
        out_dir,
        config,
        query_split,
        query_desc,
        archive_desc,
        archive.labels,
        archive.positions,
        archive.class_names,
        ranking,
        per_query,
        ks,
        method=name,
        gallery_queries=gallery_queries,
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


def _baselines(config, encoder, mesh, embedder: SplitEmbedder, baselines, ks) -> dict[str, dict[str, float]]:
    encoders = {}
    if "random_init" in baselines:
        image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
        init = functools.partial(state_lib.init_encoder_params, encoder=encoder, image_shape=image_shape)
        encoders["random_init"] = jax.jit(init, out_shardings=sharding.replicated(mesh))(
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
