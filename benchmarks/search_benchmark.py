"""Nearest-neighbour search benchmark: exact search, our ScaNN index and faiss peers, side by side.

One run measures every method on the same held-out queries, so the numbers share the machine's state
(the machine is noisy from run to run, so only ratios within one run are compared). Datasets:

- an exported index folder (`--index DIR`): its `descriptors.npy`, with `--holdout_queries` rows drawn
  out of the database as queries (or the rows of `--queries_npy`, against the whole database);
- `--synthetic_rows` clustered unit vectors of width `--dim`, with `--synthetic_queries` fresh queries
  drawn from the same distribution (not from the database).

Methods (`--methods`): `exact_search` (the package's brute force: ground truth), `exact_matmul` (matmul
+ argpartition on the already normalised database: the speed floor), `scann` (one tree+AH index, grid
over leaves_to_search × reorder) plus `index_autotune.autotune` at every target, timed on that same index,
`faiss_ivfpq` (IVF + 4-bit PQ fast-scan + exact float re-ranking, grid over nprobe × k_factor) and
`faiss_hnsw` (HNSW M=32, grid over efSearch). faiss is a benchmark-only dependency
(benchmarks/requirements.txt), imported only by its two runners. Each method's runner is a module of
`benchmarks.search_peers`; this module is the command line.

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
import json
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.machine_info import machine_info, versions
from benchmarks.search_datasets import Dataset, index_dataset, synthetic_dataset
from benchmarks.search_markdown import markdown
from benchmarks.search_peers.common import Options, Row, log
from benchmarks.search_peers.exact import run_exact
from benchmarks.search_peers.faiss_hnsw import run_faiss_hnsw
from benchmarks.search_peers.faiss_ivfpq import run_faiss_ivfpq
from benchmarks.search_peers.scann_autotune import run_scann
from benchmarks.search_peers.sweep import Sweep
from benchmarks.search_summary import best_per_target, compare_autotune
from rejepa_jax.retrieval.index_autotune import REORDER_MULTIPLES

TARGETS = (0.95, 0.99)
METHODS = ("exact_search", "exact_matmul", "scann", "faiss_ivfpq", "faiss_hnsw")
# Search-effort multiples of k: ScaNN reorder depth and faiss k_factor share one scale.
FULL_MULTIPLES = REORDER_MULTIPLES
QUICK_MULTIPLES = (3, 5, 12, 30)
FULL_EF = (10, 16, 20, 30, 40, 50, 70, 100, 150, 200, 300, 500, 800)
QUICK_EF = (16, 30, 50, 100, 200)

# Runners after the exact ones (which give the ground truth), in report order.
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
        "--brute_force_below", type=int, default=20_000, help="passed to index_autotune.autotune"
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
