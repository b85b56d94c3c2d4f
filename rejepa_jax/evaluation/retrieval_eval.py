"""Retrieval evaluation during training: embed the query and archive splits, search, score.

Descriptors are the mean-pooled encoder tokens, L2-normalised, ranked by exact cosine similarity.
Every per-example value (descriptor, label, padding flag, colour histogram) goes through the same
host-slice -> global-array path, so on many hosts all of them arrive in the same order.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from rejepa_jax import sharding
from rejepa_jax.data import pipeline
from rejepa_jax.evaluation import collapse, retrieval_metrics
from rejepa_jax.evaluation.color_histogram import color_histogram

# The mAP@K normalisation shown in tables: divide by the number of relevant items retrieved in the
# top K, the convention of the published EuroSAT retrieval floors.
TABLE_MAP_NORMALISATION = "retrieved"


@dataclasses.dataclass
class SplitEmbeddings:
    """Descriptors of one split, gathered from every host, padding removed."""

    pooled: dict[str, np.ndarray]  # descriptor name -> [N, D] (not yet normalised)
    labels: np.ndarray


class RetrievalEvaluator:
    """Scores descriptors from encoder params (and the configured baselines) on query vs archive."""

    def __init__(self, config: ml_collections.ConfigDict, encoder: nn.Module, mesh: jax.sharding.Mesh):
        self._config = config
        self._encoder = encoder
        self.mesh = mesh
        replicated = sharding.replicated(mesh)
        self._embed = jax.jit(self._pool, out_shardings=replicated)
        self._gather = jax.jit(lambda x: x, out_shardings=replicated)
        self._baseline_results: dict[str, dict[str, float]] | None = None

    def _pool(self, params: Any, images: jax.Array) -> jax.Array:
        tokens = self._encoder.apply({"params": params}, images)
        return tokens.astype(jnp.float32).mean(axis=1)

    def _all_hosts(self, local_rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._gather(sharding.global_batch({"x": local_rows}, self.mesh)["x"]))

    def embed_split(self, split: str, encoders: dict[str, Any], *, with_histogram: bool) -> SplitEmbeddings:
        """Runs every encoder (name -> params) over a split; adds colour histograms if asked."""
        data = self._config.data
        pooled: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
        if with_histogram:
            pooled["color_histogram"] = []
        labels, valid = [], []
        per_host = self._config.eval.batch_size // jax.process_count()
        start = time.perf_counter()
        for batch in pipeline.make_eval_iterator(
            self._config,
            split,
            per_host,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ):
            images = sharding.global_batch({"image": batch["image"]}, self.mesh)["image"]
            for name, params in encoders.items():
                pooled[name].append(np.asarray(self._embed(params, images)))
            if with_histogram:
                raw = batch["image"] * np.asarray(data.std, np.float32) + np.asarray(data.mean, np.float32)
                hist = color_histogram(raw, value_range=tuple(self._config.eval.histogram_range))
                pooled["color_histogram"].append(self._all_hosts(hist.astype(np.float32)))
            labels.append(self._all_hosts(np.asarray(batch["label"])))
            valid.append(self._all_hosts(np.asarray(batch["valid"])))
        keep = np.concatenate(valid).astype(bool)
        seconds = time.perf_counter() - start
        logging.info(
            "Embedded the %s split with %s: %d images in %.1f s (%.0f images/s).",
            split,
            ", ".join(pooled),
            int(keep.sum()),
            seconds,
            keep.sum() / max(seconds, 1e-9),
        )
        return SplitEmbeddings(
            pooled={name: np.concatenate(rows)[keep] for name, rows in pooled.items()},
            labels=np.concatenate(labels)[keep],
        )

    def evaluate(
        self, encoders: dict[str, Any], *, with_histogram: bool = False
    ) -> dict[str, dict[str, float]]:
        """Per descriptor name: retrieval metrics and collapse monitors."""
        query = self.embed_split("query", encoders, with_histogram=with_histogram)
        archive = self.embed_split("archive", encoders, with_histogram=with_histogram)
        results = {}
        for name in query.pooled:
            report = retrieval_metrics.retrieval_report(
                query.pooled[name],
                query.labels,
                archive.pooled[name],
                archive.labels,
                ks=list(self._config.eval.ks),
                multi_label=self._config.data.multi_label,
            )
            report["effective_rank"] = float(collapse.effective_rank(archive.pooled[name]))
            report.update({k: float(v) for k, v in collapse.embedding_std(archive.pooled[name]).items()})
            results[name] = report
        return results

    def baselines(self, random_init_params: Any) -> dict[str, dict[str, float]]:
        """The configured baselines (colour histogram, random-init encoder), computed once per run."""
        if self._baseline_results is None:
            wanted = set(self._config.eval.baselines)
            unknown = wanted - {"color_histogram", "random_init"}
            if unknown:
                raise ValueError(
                    f"Unknown eval.baselines {sorted(unknown)}; use color_histogram, random_init."
                )
            encoders = {"random_init": random_init_params} if "random_init" in wanted else {}
            self._baseline_results = (
                self.evaluate(encoders, with_histogram="color_histogram" in wanted) if wanted else {}
            )
        return self._baseline_results


def format_table(results: dict[str, dict[str, float]], ks: list[int]) -> str:
    """A plain-text table of P@K, mAP@K and collapse monitors per descriptor."""
    header = ["descriptor"] + [f"P@{k}" for k in ks] + [f"mAP@{k}" for k in ks] + ["eff.rank", "std"]
    rows = [header]
    for name, report in results.items():
        cells = [f"{report.get(f'p@{k}', float('nan')):.3f}" for k in ks]
        cells += [f"{report.get(f'map@{k}/{TABLE_MAP_NORMALISATION}', float('nan')):.3f}" for k in ks]
        cells += [
            f"{report.get('effective_rank', float('nan')):.1f}",
            f"{report.get('std_mean', float('nan')):.3f}",
        ]
        rows.append([name, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        "mAP@K: AP@K normalised by the number of relevant items retrieved in the top K; exact cosine "
        "search. eff.rank: effective rank (RankMe) and std: mean per-dimension std of the pooled "
        "archive embeddings (collapse monitors)."
    )
    return "\n".join(lines)
