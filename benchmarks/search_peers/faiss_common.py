"""What both faiss runners share: the lazy import, index size, timing and recall."""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

import numpy as np

from benchmarks.search_peers.common import Options
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.index_speed import time_search


def load_faiss(threads: int) -> Any:
    """faiss, imported here only: it is a benchmark-only dependency, pinned to `threads` threads."""
    import faiss  # Lazy by design: the package and its tests never need it.

    faiss.omp_set_num_threads(threads)
    return faiss


def bytes_per_vector(faiss: Any, index: Any) -> float:
    """Size of the index as faiss writes it, over its row count."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size / index.ntotal


def timing(index: Any, queries: np.ndarray, opts: Options) -> dict[str, float]:
    """The package's timing protocol; a single query is a batch of one (faiss has no one-row call)."""
    return time_search(
        lambda q: index.search(q, opts.k),
        lambda q: index.search(q[None], opts.k),
        queries,
        repeats=opts.repeats,
        single_queries=opts.single_queries,
    )


def recall(index: Any, queries: np.ndarray, exact: np.ndarray, k: int) -> float:
    """recall@k of the index's current search parameters against exact search."""
    _, indices = index.search(queries, k)
    return recall_vs_exact_at_k(indices, exact, k)
