"""Exact search: the package's `exact_search` (the ground truth) and a bare matmul top-k (the floor)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.search_datasets import Dataset
from benchmarks.search_peers.common import Options, Row, log, make_row
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.exact_search import exact_search
from rejepa_jax.retrieval.index_speed import time_search


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
        recall = recall_vs_exact_at_k(matmul_top_k(ds.queries, db, k), exact, k)
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
