"""Retrieval evaluation during training: embed the query and archive splits, search, score.

Descriptors are the mean-pooled encoder tokens, L2-normalised, ranked by exact cosine similarity.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from rejepa_jax.evaluation import collapse, retrieval_metrics
from rejepa_jax.retrieval.embedding import COLOR_HISTOGRAM, SplitEmbedder, SplitEmbeddings
from rejepa_jax.retrieval.exact_search import l2_normalise
from rejepa_jax.retrieval.pca_whitening import PcaWhitening

# The mAP@K normalisation shown in tables: divide by the number of relevant items retrieved in the
# top K, the convention of the published EuroSAT retrieval floors.
TABLE_MAP_NORMALISATION = "retrieved"


class RetrievalEvaluator:
    """Scores descriptors from encoder params (and the configured baselines) on query vs archive."""

    def __init__(self, config: ml_collections.ConfigDict, encoder: nn.Module, mesh: jax.sharding.Mesh):
        self._config = config
        self.mesh = mesh
        self.embedder = SplitEmbedder(config, encoder, mesh)
        self._baseline_results: dict[str, dict[str, float]] | None = None

    def embed_split(self, split: str, encoders: dict[str, Any], *, with_histogram: bool) -> SplitEmbeddings:
        return self.embedder.embed_split(split, encoders, with_histogram=with_histogram)

    def evaluate(
        self, encoders: dict[str, Any], *, with_histogram: bool = False
    ) -> dict[str, dict[str, float]]:
        """Per descriptor name: retrieval metrics and collapse monitors."""
        query = self.embed_split("query", encoders, with_histogram=with_histogram)
        archive = self.embed_split("archive", encoders, with_histogram=with_histogram)
        query_rows, archive_rows = dict(query.pooled), dict(archive.pooled)
        if self._config.eval.standardise:
            for name in [n for n in query.pooled if n != COLOR_HISTOGRAM]:
                whitening = PcaWhitening.fit_to(l2_normalise(archive.pooled[name]))
                query_rows[f"{name}+std"] = whitening.apply(l2_normalise(query.pooled[name]))
                archive_rows[f"{name}+std"] = whitening.apply(l2_normalise(archive.pooled[name]))
        results = {}
        for name in query_rows:
            report = retrieval_metrics.retrieval_report(
                query_rows[name],
                query.labels,
                archive_rows[name],
                archive.labels,
                ks=list(self._config.eval.ks),
                multi_label=self._config.data.multi_label,
            )
            report["effective_rank"] = float(collapse.effective_rank(archive_rows[name]))
            report.update({k: float(v) for k, v in collapse.embedding_std(archive_rows[name]).items()})
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
