"""The search benchmark's markdown table: per dataset, the best setting of each method per target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.search_peers.common import Row

# Search-time parameters shown in a setting's short description, with their labels.
_SHOWN = {
    "leaves_to_search": "leaves",
    "reorder": "reorder",
    "nprobe": "nprobe",
    "k_factor": "k_factor",
    "ef_search": "ef",
}
METHOD_LABELS = {
    "exact_search": "exact_search (package brute force)",
    "exact_matmul": "exact (matmul + argpartition)",
    "scann": "ScaNN tree + AH + reorder, grid",
    "scann_autotune": "ScaNN autotune",
    "faiss_ivfpq": "faiss IVF + PQ fast-scan + float refine",
    "faiss_hnsw": "faiss HNSW",
}


def describe_setting(row: Row) -> str:
    """`leaves 8, reorder 50; 0.961`: the search-time parameters and the recall."""
    shown = [f"{label} {row['params'][key]}" for key, label in _SHOWN.items() if key in row["params"]]
    return "; ".join([*([", ".join(shown)] if shown else []), f"{row['recall']:.3f}"])


def _cell(row: Row | None) -> str:
    if row is None:
        return "—"
    return f"{row['batch_qps']:,.0f} ({row['latency_p50_ms']:.2f}) [{describe_setting(row)}]"


def _build_info(rows: Sequence[Row], method: str) -> tuple[str, str, str]:
    """(build label, build seconds, bytes per vector) of a method: the same for all its grid points."""
    first = next(r for r in rows if r["method"] == method)
    build = first.get("build_label", "")
    return build, f"{first['build_s']:.1f}", f"{first['bytes_per_vector']:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    """Per dataset: the best setting of each method at each target, then the autotune comparison."""
    lines: list[str] = []
    targets = report["options"]["targets"]
    for dataset in report["datasets"]:
        rows, best = dataset["results"], dataset["best"]
        lines += [
            f"### {dataset['name']}: {dataset['rows']:,} × {dataset['dim']}, "
            f"{dataset['num_queries']:,} queries, top-{report['options']['k']}",
            "",
            "Batch QPS (single-query p50 ms) [setting; recall@k on the held-out queries].",
            "",
            "| method | build | build s | bytes/vector | "
            + " | ".join(f"recall ≥ {t}: QPS (p50 ms) [setting; recall]" for t in targets)
            + " |",
            "|---|---|---:|---:|" + "---|" * len(targets),
        ]
        for method in dict.fromkeys(r["method"] for r in rows):
            label, build_s, size = _build_info(rows, method)
            if method == "scann_autotune":
                tuned = {r["target"]: r for r in rows if r["method"] == method}
                cells = [
                    _cell(tuned.get(t)) + ("" if t not in tuned or tuned[t]["recall"] >= t else " misses")
                    for t in targets
                ]
                label = "autotuned per target; same index as the grid"
            else:
                cells = [_cell(best[f"{t}"][method]) for t in targets]
            lines.append(
                f"| {METHOD_LABELS.get(method, method)} | {label} | {build_s} | {size} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
        for entry in dataset["autotune"]:
            parts = [f"autotune {entry['target']} (recall {entry['recall']:.3f})"]
            if entry["vs_best_scann_grid"] is not None:
                met = "met" if entry["within_1_5x_of_grid"] else "NOT met"
                parts.append(
                    f"{entry['vs_best_scann_grid']:.2f}× the best ScaNN grid QPS (goal ≥ 0.67×: {met})"
                )
            if entry["vs_best_peer"] is not None:
                met = "met" if entry["at_least_best_peer"] else "NOT met"
                parts.append(
                    f"{entry['vs_best_peer']:.2f}× the best peer, {entry['best_peer']} (goal ≥ 1×: {met})"
                )
            lines.append(f"- {'; '.join(parts)}")
        lines.append("")
    return "\n".join(lines)
