"""The search benchmark's verdicts: the fastest setting of each method per recall target, and how the
autotuned ScaNN setting compares with the best grid setting and the best peer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.search_peers.common import Row

# The ScaNN grid and its autotuned settings are reported as different methods; peers are the rest.
SCANN_METHODS = ("scann", "scann_autotune")
# Goals for the autotuned setting: within 1.5x of the best ScaNN grid setting, at least as fast as the
# best peer (that one matters at 0.95 on the 1M synthetic set).
GRID_RATIO_GOAL = 1 / 1.5
PEER_RATIO_GOAL = 1.0


def best_per_target(rows: Sequence[Row], targets: Sequence[float]) -> dict[str, dict[str, Row | None]]:
    """{target: {method: the highest-batch-QPS row with recall >= target, or None}}.

    Autotuned rows are excluded: each answers one target and is compared separately.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "scann_autotune"))
    best: dict[str, dict[str, Row | None]] = {}
    for target in targets:
        best[f"{target}"] = {}
        for method in methods:
            qualifying = [r for r in rows if r["method"] == method and r["recall"] >= target]
            best[f"{target}"][method] = max(qualifying, key=lambda r: r["batch_qps"], default=None)
    return best


def compare_autotune(rows: Sequence[Row], best: dict[str, dict[str, Row | None]]) -> list[dict[str, Any]]:
    """For each autotuned setting: QPS relative to the best ScaNN grid setting and the best peer."""
    comparisons = []
    for row in (r for r in rows if r["method"] == "scann_autotune"):
        target = row["target"]
        at_target = best.get(f"{target}", {})
        grid = at_target.get("scann")
        peers = [r for m, r in at_target.items() if m not in SCANN_METHODS and r is not None]
        peer = max(peers, key=lambda r: r["batch_qps"], default=None)
        entry: dict[str, Any] = {
            "target": target,
            "params": row["params"],
            "recall": row["recall"],
            "meets_target": row["recall"] >= target,
            "batch_qps": row["batch_qps"],
            "best_scann_grid_qps": grid["batch_qps"] if grid else None,
            "vs_best_scann_grid": row["batch_qps"] / grid["batch_qps"] if grid else None,
            "best_peer": peer["method"] if peer else None,
            "best_peer_qps": peer["batch_qps"] if peer else None,
            "vs_best_peer": row["batch_qps"] / peer["batch_qps"] if peer else None,
        }
        ratio_grid, ratio_peer = entry["vs_best_scann_grid"], entry["vs_best_peer"]
        entry["within_1_5x_of_grid"] = None if ratio_grid is None else ratio_grid >= GRID_RATIO_GOAL
        entry["at_least_best_peer"] = None if ratio_peer is None else ratio_peer >= PEER_RATIO_GOAL
        comparisons.append(entry)
    return comparisons
