"""Recall of an approximate nearest-neighbour ranking against the exact one (not relevance recall).

`retrieval_metrics.recall_at_k` counts relevant items found; this counts exact neighbours found, the
quality of an index rather than of the descriptors.
"""

from __future__ import annotations

import numpy as np

from rejepa_jax.retrieval.exact_search import EMPTY_INDEX


def per_query_recall_vs_exact(approx_indices: np.ndarray, exact_indices: np.ndarray, k: int) -> np.ndarray:
    """[Q] fraction of each query's valid exact top-k ids present in its approximate top-k."""
    approx = np.asarray(approx_indices)[:, :k]
    exact = np.asarray(exact_indices)[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"Query counts differ: {approx.shape[0]} approximate, {exact.shape[0]} exact.")
    valid = exact != EMPTY_INDEX
    found = ((exact[:, :, None] == approx[:, None, :]).any(axis=2) & valid).sum(axis=1)
    wanted = valid.sum(axis=1)
    return np.where(wanted > 0, found / np.maximum(wanted, 1), 1.0)


def recall_vs_exact_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k|.

    Exact entries of -1 (fewer than k archive items) are not counted; a query with no valid exact
    entry scores 1. Ties at the k-th exact score count the tied item exact_search chose.
    """
    if k < 1:
        raise ValueError(f"k must be positive: got {k}.")
    return float(per_query_recall_vs_exact(approx_indices, exact_indices, k).mean())
