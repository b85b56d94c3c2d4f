"""Nearest-neighbour search benchmark: exact search, our ScaNN index and faiss peers, side by side.

One run measures every method on the same held-out queries, so the numbers share the machine's state
(the machine is noisy from run to run; see shared/docs/PERF_ANCHORS.md). Datasets:

- an exported index folder (`--index DIR`): its `descriptors.npy`, with `--holdout_queries` rows drawn
  out of the database as queries (or the rows of `--queries_npy`, against the whole database);
- `--synthetic_rows` clustered unit vectors of width `--dim`, with `--synthetic_queries` fresh queries
  drawn from the same distribution (not from the database).

Methods (`--methods`): `exact_search` (the package's brute force: ground truth), `exact_matmul` (matmul
+ argpartition on the already normalised database: the speed floor), `scann` (one tree+AH index, grid
over leaves_to_search × reorder) plus `scann_index.autotune` at every target, timed on that same index,
`faiss_ivfpq` (IVF + 4-bit PQ fast-scan + exact float re-ranking, grid over nprobe × k_factor) and
`faiss_hnsw` (HNSW M=32, grid over efSearch). faiss is a benchmark-only dependency
(benchmarks/requirements.txt), imported only by its two runners.

Every grid point gets recall@k against `exact_search`, batch QPS (all queries in one call, median of
`--repeats`), single-query p50/p99 latency, build time and bytes per vector. Each grid row (one reorder,
one k_factor, or HNSW's single row) is swept in ascending order of its search-effort parameter and stops
at the first point reaching the highest target (more effort is only slower) or when recall stops
improving (the re-ranking depth caps it). Then, per recall target, the fastest qualifying setting of
each method, and for every autotuned ScaNN setting its QPS relative to the best ScaNN grid setting and
to the best peer.

    # development (50,000 synthetic rows, small grids; about a minute on a quiet machine):
    .venv/bin/python -m benchmarks.search_benchmark --quick --index /tmp/es/index --out /tmp/quick.json
    # the full run (1,000,000 × 384 synthetic, full grids):
    .venv/bin/python -m benchmarks.search_benchmark --index /tmp/es/index --out results.json

Run it on a quiet machine. Under load from other processes, every 2-thread call that synchronises its
threads (OpenBLAS for one query, faiss's OpenMP regions) waits a scheduler slice for a descheduled
thread: single-query p50s snap to about 8 ms and faiss training with libgomp's default spinning took
67 s instead of 0.7 s (OMP_WAIT_POLICY=passive: 0.9 s). The JSON records OMP_*/OPENBLAS_* settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rejepa_jax.evaluation.retrieval_metrics import exact_search, l2_normalise
from rejepa_jax.retrieval import manifest, scann_index
from rejepa_jax.retrieval.descriptor_store import read_descriptors

TARGETS = (0.95, 0.99)
METHODS = ("exact_search", "exact_matmul", "scann", "faiss_ivfpq", "faiss_hnsw")
# The ScaNN grid and its autotuned settings are reported as different methods; peers are the rest.
SCANN_METHODS = ("scann", "scann_autotune")
# Goals for the autotuned setting: within 1.5x of the best ScaNN grid setting, at least as fast as the
# best peer (that one matters at 0.95 on the 1M synthetic set).
GRID_RATIO_GOAL = 1 / 1.5
PEER_RATIO_GOAL = 1.0

# Search-effort multiples of k: ScaNN reorder depth and faiss k_factor share one scale.
FULL_MULTIPLES = scann_index.REORDER_MULTIPLES
QUICK_MULTIPLES = (3, 5, 12, 30)
FULL_EF = (10, 16, 20, 30, 40, 50, 70, 100, 150, 200, 300, 500, 800)
QUICK_EF = (16, 30, 50, 100, 200)


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything a runner needs besides the data; `dataclasses.asdict` goes into the JSON."""

    k: int = 10
    targets: tuple[float, ...] = TARGETS
    repeats: int = 3
    single_queries: int = 200
    exact_search_single_queries: int = 20
    threads: int = 2
    seed: int = 0
    num_leaves: int = 0  # 0: round(sqrt(N)), the tree autotune builds.
    training_sample: int = 100_000
    brute_force_below: int = 20_000
    reorder_multiples: tuple[int, ...] = FULL_MULTIPLES
    k_factors: tuple[int, ...] = FULL_MULTIPLES
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef: tuple[int, ...] = FULL_EF
    pq_dims_per_code: int = 2
    faiss_by_residual: bool = True
    min_gain: float = 0.001
    patience: int = 2


@dataclasses.dataclass
class Dataset:
    """A database of unit rows and held-out queries; `describe` is what the JSON records about it."""

    name: str
    db: np.ndarray
    queries: np.ndarray
    describe: dict[str, Any]


Row = dict[str, Any]


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Datasets.


def holdout_split(num_rows: int, num_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database rows, query rows), disjoint and sorted: the queries are never in the database."""
    if not 0 < num_queries < num_rows:
        raise ValueError(f"Need 0 < holdout queries < rows: got {num_queries} of {num_rows}.")
    rng = np.random.default_rng(seed)
    query_rows = np.sort(rng.choice(num_rows, size=num_queries, replace=False))
    keep = np.ones(num_rows, dtype=bool)
    keep[query_rows] = False
    return np.flatnonzero(keep), query_rows


def index_dataset(
    index_dir: pathlib.Path, holdout: int, seed: int, queries_npy: pathlib.Path | None
) -> Dataset:
    """An exported index's descriptors; queries held out of the database unless given as a file."""
    path = index_dir / manifest.DESCRIPTORS
    descriptors = read_descriptors(path)
    if queries_npy is None:
        db_rows, query_rows = holdout_split(len(descriptors), holdout, seed)
        db, queries = np.asarray(descriptors[db_rows]), np.asarray(descriptors[query_rows])
        query_source = f"{holdout} rows held out of the database (seed {seed})"
    else:
        db = np.asarray(descriptors)
        queries = np.load(queries_npy, allow_pickle=False).astype(np.float32)
        if queries.ndim != 2 or queries.shape[1] != db.shape[1]:
            raise ValueError(f"{queries_npy}: need [Q, {db.shape[1]}] queries, got {queries.shape}.")
        queries = l2_normalise(queries)
        query_source = str(queries_npy)
    info = {"source": str(path), "query_source": query_source}
    return Dataset(index_dir.name or "index", db, np.ascontiguousarray(queries), info)


def synthetic_dataset(
    rows: int, dim: int, num_queries: int, clusters: int, noise: float, seed: int
) -> Dataset:
    """Clustered unit vectors; the queries are fresh draws from the same clusters, not database rows."""
    data = scann_index.clustered_unit_vectors(rows + num_queries, dim, clusters, seed, noise)
    info = {"source": f"clustered_unit_vectors(clusters={clusters}, noise={noise}, seed={seed})"}
    info["query_source"] = f"{num_queries} fresh draws from the same distribution"
    return Dataset("synthetic", data[:rows], data[rows:], info)


# ---------------------------------------------------------------------------------------------------
# Grid sweep, timing and selection (no index library needed).


@dataclasses.dataclass
class Sweep:
    """One grid row: `param` swept over `candidates` with the `fixed` parameters; what was measured."""

    method: str
    fixed: dict[str, Any]
    param: str
    candidates: list[int]
    measured: list[tuple[int, float]]  # (value, recall), ascending.
    stop: str  # "reached" the highest target, recall went "flat", or the candidates were "exhausted".

    def summary(self) -> str:
        fixed = ", ".join(f"{k} {v}" for k, v in self.fixed.items())
        points = ", ".join(f"{v}:{r:.3f}" for v, r in self.measured)
        return f"{self.method} [{fixed}] {self.param} {points} ({self.stop})"


def sweep(
    method: str,
    fixed: dict[str, Any],
    param: str,
    values: Sequence[int],
    recall_of: Callable[[int], float],
    *,
    stop_at: float,
    min_gain: float,
    patience: int,
) -> Sweep:
    """Recall at ascending effort values, stopping early where more effort cannot help.

    Stops after the first value whose recall reaches `stop_at` (the highest target: larger values only
    cost more) or once `patience` consecutive steps each gained less than `min_gain` (recall has hit the
    ceiling set by the other parameter, e.g. the re-ranking depth).
    """
    candidates = sorted(set(values))
    measured: list[tuple[int, float]] = []
    flat_steps = 0
    stop = "exhausted"
    for value in candidates:
        recall = recall_of(value)
        if measured:
            flat_steps = flat_steps + 1 if recall - measured[-1][1] < min_gain else 0
        measured.append((value, recall))
        if recall >= stop_at:
            stop = "reached"
            break
        if flat_steps >= patience:
            stop = "flat"
            break
    result = Sweep(method, fixed, param, candidates, measured, stop)
    log(f"  {result.summary()}")
    return result


def time_search(
    batch: Callable[[np.ndarray], object],
    single: Callable[[np.ndarray], object],
    queries: np.ndarray,
    *,
    repeats: int,
    single_queries: int,
) -> dict[str, float]:
    """The protocol of `scann_index.benchmark` for a method without a ScaNN searcher.

    One warm-up batch, then batch QPS over all queries (median of `repeats` calls) and latency one
    query at a time over the first `single_queries` queries.
    """
    if len(queries) == 0 or repeats < 1 or single_queries < 1:
        raise ValueError("Need at least one query, one repeat and one single query.")
    batch(queries[: min(len(queries), 32)])
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch(queries)
        seconds.append(time.perf_counter() - start)
    latencies_ms = []
    for query in queries[:single_queries]:
        start = time.perf_counter()
        single(query)
        latencies_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "batch_qps": len(queries) / float(np.median(seconds)),
        "latency_p50_ms": float(np.percentile(latencies_ms, 50)),
        "latency_p99_ms": float(np.percentile(latencies_ms, 99)),
        "latency_queries": float(len(latencies_ms)),
        "num_queries": float(len(queries)),
    }


def make_row(
    method: str, params: dict[str, Any], recall: float, timing: dict[str, float], **extra: Any
) -> Row:
    """One measured setting; `extra` carries build_s, bytes_per_vector and method-specific fields."""
    return {"method": method, "params": params, "recall": recall, **timing, **extra}


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


# ---------------------------------------------------------------------------------------------------
# Markdown.

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


# ---------------------------------------------------------------------------------------------------
# Runners: each returns its rows; exact_search's indices are the ground truth for the others.


def matmul_top_k(queries: np.ndarray, db: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Top-k indices by inner product on an already normalised database (no copies of it): the floor."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ db.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def run_exact(ds: Dataset, opts: Options, methods: Sequence[str]) -> tuple[list[Row], np.ndarray]:
    """Ground truth from `exact_search`, and its timing and the matmul floor's, if asked for.

    `exact_search` normalises a copy of the whole database on every call, so its single-query latency
    measures that copy; it is timed over `exact_search_single_queries` queries, the floor over all.
    """
    k, db = opts.k, ds.db
    _, exact = exact_search(ds.queries, db, k)
    rows = []
    common = {"build_s": 0.0, "bytes_per_vector": 4.0 * db.shape[1], "build_label": "none"}
    if "exact_search" in methods:
        timing = time_search(
            lambda q: exact_search(q, db, k),
            lambda q: exact_search(q[None], db, k),
            ds.queries,
            repeats=opts.repeats,
            single_queries=opts.exact_search_single_queries,
        )
        rows.append(make_row("exact_search", {}, 1.0, timing, **common))
        log(f"exact_search: {timing['batch_qps']:,.0f} QPS, p50 {timing['latency_p50_ms']:.1f} ms")
    if "exact_matmul" in methods:
        recall = scann_index.recall_at_k(matmul_top_k(ds.queries, db, k), exact, k)
        timing = time_search(
            lambda q: matmul_top_k(q, db, k),
            lambda q: matmul_top_k(q[None], db, k),
            ds.queries,
            repeats=opts.repeats,
            single_queries=opts.single_queries,
        )
        rows.append(make_row("exact_matmul", {}, recall, timing, **common))
        log(f"exact_matmul: {timing['batch_qps']:,.0f} QPS, p50 {timing['latency_p50_ms']:.1f} ms")
    return rows, exact


def _build_fields(settings: scann_index.IndexSettings) -> scann_index.IndexSettings:
    """The settings with their search-time fields blanked: equal values mean the same built index."""
    return dataclasses.replace(settings, leaves_to_search=1, reorder=1)


def run_scann(ds: Dataset, exact: np.ndarray, opts: Options) -> tuple[list[Row], list[Sweep]]:
    """Autotune at each target, then one tree+AH build swept over leaves_to_search × reorder.

    The grid index is built with autotune's own tree settings (unless `num_leaves` overrides them);
    builds are deterministic given the seed, so an autotuned setting is timed on the very index it was
    tuned on, next to the grid points.
    """
    k, (n, _) = opts.k, ds.db.shape
    tuned: list[tuple[float, scann_index.IndexSettings, float, int, float]] = []
    for target in opts.targets:
        start = time.perf_counter()
        settings, tuned_recall, table = scann_index.autotune(
            ds.db, target_recall=target, k=k, seed=opts.seed, brute_force_below=opts.brute_force_below
        )
        tuned.append((target, settings, tuned_recall, len(table), time.perf_counter() - start))
        log(f"scann autotune {target}: {settings} ({len(table)} settings, {tuned[-1][4]:.1f} s)")

    base = scann_index.IndexSettings(
        kind="tree_ah",
        num_leaves=opts.num_leaves or max(1, round(math.sqrt(n))),
        leaves_to_search=1,
        reorder=1,
        training_sample_size=min(n, opts.training_sample),
        seed=opts.seed,
    )
    rows: list[Row] = []
    sweeps: list[Sweep] = []
    latency_queries = float(min(opts.single_queries, len(ds.queries)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        searcher = scann_index.build_searcher(ds.db, base, num_neighbors=k)
        build_s = time.perf_counter() - start
        searcher.set_num_threads(opts.threads)
        scann_index.save(searcher, pathlib.Path(tmp) / "grid")
        log(f"scann: built {base.num_leaves} leaves in {build_s:.1f} s")
        build = {
            "build_s": build_s,
            "build_label": f"{base.num_leaves} leaves, AH {base.dims_per_block} dims/block",
        }

        def measure(settings: scann_index.IndexSettings) -> dict[str, float]:
            return scann_index.benchmark(
                searcher,
                ds.queries,
                k,
                settings,
                repeats=opts.repeats,
                index_dir=pathlib.Path(tmp) / "grid",
                single_queries=opts.single_queries,
            ) | {"latency_queries": latency_queries}

        def recall_of(settings: scann_index.IndexSettings) -> float:
            indices, _ = scann_index.search(searcher, ds.queries, k, settings)
            return scann_index.recall_at_k(indices, exact, k)

        for multiple in opts.reorder_multiples:
            reorder = min(multiple * k, n - 1)

            def at(leaves: int, reorder: int = reorder) -> scann_index.IndexSettings:
                return dataclasses.replace(base, leaves_to_search=leaves, reorder=reorder)

            swept = sweep(
                "scann",
                {"reorder": reorder},
                "leaves_to_search",
                scann_index.leaves_grid(base.num_leaves),
                lambda leaves, at=at: recall_of(at(leaves)),
                stop_at=max(opts.targets),
                min_gain=opts.min_gain,
                patience=opts.patience,
            )
            sweeps.append(swept)
            for leaves, recall in swept.measured:
                settings = at(leaves)
                params = {"num_leaves": base.num_leaves, "leaves_to_search": leaves, "reorder": reorder}
                rows.append(make_row("scann", params, recall, measure(settings), **build))

        for target, settings, tuned_recall, tried, tune_s in tuned:
            extra = {
                "target": target,
                "tuned_recall": tuned_recall,
                "settings_tried": tried,
                "autotune_s": tune_s,
            }
            extra["settings"] = dataclasses.asdict(settings)
            params = {"kind": settings.kind}
            if settings.kind == "tree_ah":
                params |= {"num_leaves": settings.num_leaves, "leaves_to_search": settings.leaves_to_search}
                params["reorder"] = settings.reorder
            if _build_fields(settings) == base:
                recall = recall_of(settings)
                rows.append(make_row("scann_autotune", params, recall, measure(settings), **build, **extra))
                continue
            # Brute force (or a different tree): its own build, timed the same way.
            start = time.perf_counter()
            own = scann_index.build_searcher(ds.db, settings, num_neighbors=k)
            own_build_s = time.perf_counter() - start
            own.set_num_threads(opts.threads)
            indices, _ = scann_index.search(own, ds.queries, k, settings)
            timing = scann_index.benchmark(
                own, ds.queries, k, settings, repeats=opts.repeats, single_queries=opts.single_queries
            ) | {"latency_queries": latency_queries}
            recall = scann_index.recall_at_k(indices, exact, k)
            rows.append(
                make_row(
                    "scann_autotune",
                    params,
                    recall,
                    timing,
                    build_s=own_build_s,
                    build_label=settings.kind,
                    **extra,
                )
            )
    return rows, sweeps


def _faiss(threads: int) -> Any:
    """faiss, imported here only: it is a benchmark-only dependency, pinned to `threads` threads."""
    import faiss  # Lazy by design: the package and its tests never need it.

    faiss.omp_set_num_threads(threads)
    return faiss


def _faiss_bytes_per_vector(faiss: Any, index: Any) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size / index.ntotal


def _faiss_timing(index: Any, queries: np.ndarray, opts: Options) -> dict[str, float]:
    return time_search(
        lambda q: index.search(q, opts.k),
        lambda q: index.search(q[None], opts.k),
        queries,
        repeats=opts.repeats,
        single_queries=opts.single_queries,
    )


def _faiss_recall(index: Any, queries: np.ndarray, exact: np.ndarray, k: int) -> float:
    _, indices = index.search(queries, k)
    return scann_index.recall_at_k(indices, exact, k)


def run_faiss_ivfpq(ds: Dataset, exact: np.ndarray, opts: Options) -> tuple[list[Row], list[Sweep]]:
    """IVF (sqrt(N) lists, as ScaNN's tree) + 4-bit PQ fast-scan on `pq_dims_per_code` dims per code,
    re-ranked by exact inner products of k_factor·k candidates; grid over nprobe × k_factor.

    `faiss_by_residual` (default on; faiss's constructor and factory leave it off) encodes residuals
    from the list centroids: the same recall on the synthetic set, better on descriptors that fill a
    narrow cone (early EuroSAT export, k_factor 30: 0.92 instead of 0.86 at nprobe 2, 0.89 instead of
    0.47 at nprobe 8; without residuals the PQ error swamps the tiny score gaps as more lists join).
    """
    faiss = _faiss(opts.threads)
    n, d = ds.db.shape
    if d % opts.pq_dims_per_code:
        raise ValueError(f"dim {d} is not a multiple of pq_dims_per_code {opts.pq_dims_per_code}.")
    nlist = opts.num_leaves or max(1, round(math.sqrt(n)))
    pq_m = d // opts.pq_dims_per_code
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFPQFastScan(quantizer, d, nlist, pq_m, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.by_residual = opts.faiss_by_residual
    index = faiss.IndexRefineFlat(ivf)
    rng = np.random.default_rng(opts.seed)
    sample = ds.db[np.sort(rng.choice(n, size=min(n, opts.training_sample), replace=False))]
    index.train(sample)
    index.add(ds.db)
    build_s = time.perf_counter() - start
    log(f"faiss_ivfpq: built {nlist} lists, PQ{pq_m}x4 in {build_s:.1f} s")
    build = {"build_s": build_s, "bytes_per_vector": _faiss_bytes_per_vector(faiss, index)}
    residual = "residual " if opts.faiss_by_residual else ""
    build["build_label"] = f"IVF{nlist}, {residual}PQ{pq_m}x4 fast-scan, flat refine"

    def set_params(nprobe: int, k_factor: int) -> None:
        ivf.nprobe, index.k_factor = nprobe, float(k_factor)

    rows: list[Row] = []
    sweeps: list[Sweep] = []
    for k_factor in opts.k_factors:

        def recall_of(nprobe: int, k_factor: int = k_factor) -> float:
            set_params(nprobe, k_factor)
            return _faiss_recall(index, ds.queries, exact, opts.k)

        swept = sweep(
            "faiss_ivfpq",
            {"k_factor": k_factor},
            "nprobe",
            scann_index.leaves_grid(nlist),
            recall_of,
            stop_at=max(opts.targets),
            min_gain=opts.min_gain,
            patience=opts.patience,
        )
        sweeps.append(swept)
        for nprobe, recall in swept.measured:
            set_params(nprobe, k_factor)
            params = {"nlist": nlist, "pq_m": pq_m, "by_residual": opts.faiss_by_residual}
            params |= {"nprobe": nprobe, "k_factor": k_factor}
            timing = _faiss_timing(index, ds.queries, opts)
            rows.append(make_row("faiss_ivfpq", params, recall, timing, **build))
    return rows, sweeps


def run_faiss_hnsw(ds: Dataset, exact: np.ndarray, opts: Options) -> tuple[list[Row], list[Sweep]]:
    """HNSW over the float vectors (inner product, M=`hnsw_m`); grid over efSearch."""
    faiss = _faiss(opts.threads)
    d = ds.db.shape[1]
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = opts.hnsw_ef_construction
    index.add(ds.db)
    build_s = time.perf_counter() - start
    log(f"faiss_hnsw: built M={opts.hnsw_m} in {build_s:.1f} s")
    build = {"build_s": build_s, "bytes_per_vector": _faiss_bytes_per_vector(faiss, index)}
    build["build_label"] = f"M={opts.hnsw_m}, efConstruction {opts.hnsw_ef_construction}"

    def recall_of(ef: int) -> float:
        index.hnsw.efSearch = ef
        return _faiss_recall(index, ds.queries, exact, opts.k)

    swept = sweep(
        "faiss_hnsw",
        {"M": opts.hnsw_m},
        "ef_search",
        opts.hnsw_ef,
        recall_of,
        stop_at=max(opts.targets),
        min_gain=opts.min_gain,
        patience=opts.patience,
    )
    rows: list[Row] = []
    for ef, recall in swept.measured:
        index.hnsw.efSearch = ef
        params = {"M": opts.hnsw_m, "ef_construction": opts.hnsw_ef_construction, "ef_search": ef}
        rows.append(make_row("faiss_hnsw", params, recall, _faiss_timing(index, ds.queries, opts), **build))
    return rows, [swept]


RUNNERS: dict[str, Callable[[Dataset, np.ndarray, Options], tuple[list[Row], list[Sweep]]]] = {
    "scann": run_scann,
    "faiss_ivfpq": run_faiss_ivfpq,
    "faiss_hnsw": run_faiss_hnsw,
}


def run_dataset(ds: Dataset, opts: Options, methods: Sequence[str]) -> dict[str, Any]:
    """Every asked-for method on one dataset, the best settings per target and the autotune check."""
    log(f"{ds.name}: {ds.db.shape[0]:,} × {ds.db.shape[1]} database, {len(ds.queries):,} queries")
    rows, exact = run_exact(ds, opts, methods)
    sweeps: list[Sweep] = []
    for method, runner in RUNNERS.items():
        if method in methods:
            more_rows, more_sweeps = runner(ds, exact, opts)
            rows += more_rows
            sweeps += more_sweeps
    best = best_per_target(rows, opts.targets)
    return {
        "name": ds.name,
        **ds.describe,
        "rows": int(ds.db.shape[0]),
        "dim": int(ds.db.shape[1]),
        "num_queries": len(ds.queries),
        "results": rows,
        "grid": [dataclasses.asdict(sw) for sw in sweeps],
        "best": best,
        "autotune": compare_autotune(rows, best),
    }


# ---------------------------------------------------------------------------------------------------
# Machine and versions.


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory and the thread/BLAS environment, which all move the numbers."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    model = ""
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    meminfo = pathlib.Path("/proc/meminfo")
    mem_kib = 0
    if meminfo.exists():
        mem_kib = next(
            (
                int(line.split()[1])
                for line in meminfo.read_text().splitlines()
                if line.startswith("MemTotal:")
            ),
            0,
        )
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "XLA_FLAGS"))}
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "environment": env,
    }


def versions() -> dict[str, str | None]:
    """Versions of the libraries measured, and the commit of this repository."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("numpy", "scann", "faiss-cpu"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    try:
        out["rejepa_jax_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=pathlib.Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["rejepa_jax_commit"] = None
    return out


# ---------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=pathlib.Path, help="exported index folder (its descriptors.npy)")
    parser.add_argument(
        "--queries_npy", type=pathlib.Path, help="queries for --index instead of held-out rows"
    )
    parser.add_argument(
        "--holdout_queries", type=int, default=1_000, help="rows held out of --index as queries"
    )
    parser.add_argument(
        "--synthetic_rows", type=int, help="0 skips the synthetic set (default 1M, quick 50k)"
    )
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--synthetic_queries", type=int, default=1_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="batch timings per setting (median)")
    parser.add_argument("--single_queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument(
        "--exact_search_single_queries",
        type=int,
        default=20,
        help="single queries timed for exact_search (each call copies and normalises the database)",
    )
    parser.add_argument("--threads", type=int, default=2, help="ScaNN and faiss search threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_leaves", type=int, default=0, help="ScaNN leaves and faiss lists; 0: sqrt(N)")
    parser.add_argument("--training_sample", type=int, default=100_000)
    parser.add_argument(
        "--brute_force_below", type=int, default=20_000, help="passed to scann_index.autotune"
    )
    parser.add_argument(
        "--reorder_multiples", type=int, nargs="+", help="ScaNN reorder grid, in multiples of k"
    )
    parser.add_argument("--k_factors", type=int, nargs="+", help="faiss refine k_factor grid")
    parser.add_argument("--hnsw_ef", type=int, nargs="+", help="faiss HNSW efSearch grid")
    parser.add_argument("--pq_dims_per_code", type=int, default=2, help="faiss PQ: dims per 4-bit code")
    parser.add_argument("--faiss_by_residual", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--hnsw_m", type=int, default=32)
    parser.add_argument("--hnsw_ef_construction", type=int, default=40)
    parser.add_argument(
        "--min_gain", type=float, default=0.001, help="recall gain below which a step is flat"
    )
    parser.add_argument("--patience", type=int, default=2, help="flat steps that end a grid row")
    parser.add_argument("--quick", action="store_true", help="50,000 synthetic rows and small grids")
    parser.add_argument("--out", type=pathlib.Path, help="write the full report as JSON here")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    """Explicit flags win; otherwise --quick picks the small grids and the full run the large ones."""
    multiples = QUICK_MULTIPLES if args.quick else FULL_MULTIPLES
    return Options(
        k=args.k,
        targets=tuple(sorted(args.targets)),
        repeats=args.repeats,
        single_queries=args.single_queries,
        exact_search_single_queries=args.exact_search_single_queries,
        threads=args.threads,
        seed=args.seed,
        num_leaves=args.num_leaves,
        training_sample=args.training_sample,
        brute_force_below=args.brute_force_below,
        reorder_multiples=tuple(args.reorder_multiples or multiples),
        k_factors=tuple(args.k_factors or multiples),
        pq_dims_per_code=args.pq_dims_per_code,
        faiss_by_residual=args.faiss_by_residual,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        hnsw_ef=tuple(args.hnsw_ef or (QUICK_EF if args.quick else FULL_EF)),
        min_gain=args.min_gain,
        patience=args.patience,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; prints the markdown table, writes the JSON report and returns it."""
    args = parse_args(argv)
    opts = options_from(args)
    synthetic_rows = (
        args.synthetic_rows if args.synthetic_rows is not None else (50_000 if args.quick else 1_000_000)
    )
    if args.index is None and synthetic_rows == 0:
        raise SystemExit("Nothing to measure: give --index, or --synthetic_rows above 0.")
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": [
            sys.executable,
            "-m",
            "benchmarks.search_benchmark",
            *(sys.argv[1:] if argv is None else argv),
        ],
        "machine": machine_info(),
        "versions": versions(),
        "options": dataclasses.asdict(opts) | {"methods": args.methods, "quick": args.quick},
        "datasets": [],
    }
    datasets: list[Callable[[], Dataset]] = []
    if args.index is not None:
        datasets.append(lambda: index_dataset(args.index, args.holdout_queries, args.seed, args.queries_npy))
    if synthetic_rows > 0:
        datasets.append(
            lambda: synthetic_dataset(
                synthetic_rows, args.dim, args.synthetic_queries, args.clusters, args.noise, args.seed
            )
        )
    start = time.perf_counter()
    for load in datasets:  # One at a time: a 1M set and its indexes take several GB.
        report["datasets"].append(run_dataset(load(), opts, args.methods))
        report["wall_s"] = time.perf_counter() - start
        report["markdown"] = markdown(report)
        if args.out is not None:  # After every dataset, so a long run that dies later keeps the first.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
            log(f"wrote {args.out}")
    print(report["markdown"])
    return report


if __name__ == "__main__":
    main()
