"""Search speed of an index: batch QPS, single-query latency and bytes per vector.

One timing protocol for the evaluation report and the benchmarks, so a ScaNN index and the methods it
is compared with are timed the same way.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from collections.abc import Callable

import numpy as np

from rejepa_jax.retrieval import scann_index
from rejepa_jax.retrieval.scann_index import IndexSettings, Searcher


def time_search(
    batch: Callable[[np.ndarray], object],
    single: Callable[[np.ndarray], object],
    queries: np.ndarray,
    *,
    repeats: int,
    single_queries: int,
) -> dict[str, float]:
    """Batch QPS over all queries (median of `repeats` calls) and single-query p50/p99 latency.

    One warm-up batch first (caches, thread pools). Latency is measured one query at a time over the
    first `single_queries` queries, as a serving path would call it: `single` gets one [D] row.
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


def index_bytes(directory: str | pathlib.Path) -> int:
    """Total size of the files in a saved index directory."""
    return sum(p.stat().st_size for p in pathlib.Path(directory).rglob("*") if p.is_file())


def measure_speed(
    searcher: Searcher,
    queries: np.ndarray,
    k: int,
    settings: IndexSettings,
    *,
    repeats: int = 3,
    index_dir: str | pathlib.Path | None = None,
    single_queries: int = 200,
) -> dict[str, float]:
    """`time_search` of a ScaNN searcher with the settings' search-time parameters, and its size.

    Single queries go through ScaNN's one-query call, not a batch of one. `bytes_per_vector` is the
    saved index size over the row count; without `index_dir` the searcher is saved to a temporary
    directory to measure it.
    """
    queries = scann_index.check_queries(queries)
    reorder, leaves = scann_index.search_params(settings, k)
    timing = time_search(
        lambda batch: scann_index.search(searcher, batch, k, settings),
        lambda query: searcher.search(
            query, k, -1 if reorder is None else reorder, -1 if leaves is None else leaves
        ),
        queries,
        repeats=repeats,
        single_queries=single_queries,
    )
    if index_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            scann_index.save(searcher, tmp)
            size = index_bytes(tmp)
    else:
        size = index_bytes(index_dir)
    return timing | {"bytes_per_vector": size / searcher.size()}
