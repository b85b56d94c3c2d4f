"""Exact cosine search: the ground truth that the index is tuned against and the metrics rank by.

It lives with retrieval (not evaluation) because exporting and auto-tuning an index need it, and
evaluation sits above retrieval. Pure numpy on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Index and score of a rank that holds no archive item (K larger than what the query may retrieve).
EMPTY_INDEX = -1
EMPTY_SCORE = -np.inf

DEFAULT_CHUNK = 256


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero (it then ties with every item)."""
    x = np.asarray(x)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(x.dtype)


def id_codes(query_ids: Sequence | None, archive_ids: Sequence | None, nq: int, na: int):
    """Integer codes for the ids (shared between both sides), so leave-one-out compares integers."""
    if query_ids is None and archive_ids is None:
        return None
    if query_ids is None or archive_ids is None:
        raise ValueError("Leave-one-out needs both query_ids and archive_ids.")
    query_ids, archive_ids = np.asarray(query_ids), np.asarray(archive_ids)
    if query_ids.shape != (nq,) or archive_ids.shape != (na,):
        raise ValueError(
            f"ids must be 1-D with one entry per row: got {query_ids.shape} for {nq} queries and "
            f"{archive_ids.shape} for {na} archive items."
        )
    _, codes = np.unique(np.concatenate([query_ids, archive_ids]), return_inverse=True)
    return codes[:nq], codes[nq:]


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of every row, best first, equal scores ordered by the lower column index.

    A partition finds each row's k-th best score; every column at least that good is a candidate (k of
    them, more only when there are ties at the boundary), and one lexicographic sort over the candidates
    orders them by (row, -score, column).
    """
    num_rows, num_cols = scores.shape
    if k < num_cols:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        rows, cols = np.nonzero(scores >= kth[:, None])
    else:
        rows, cols = np.nonzero(np.ones_like(scores, dtype=bool))
    values = scores[rows, cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = starts[:, None] + np.arange(k)
    return values[take], cols[take]


def exact_search(
    queries: np.ndarray,
    archive: np.ndarray,
    k: int,
    *,
    query_ids: Sequence | None = None,
    archive_ids: Sequence | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine search: (scores [Q, k'], indices [Q, k']) with k' = min(k, archive size).

    Rows of both sides are L2-normalised here, so the inner product is the cosine. Queries are scored
    `chunk` at a time, so memory stays at O(chunk × archive) whatever the number of queries. Equal
    scores rank the lower archive index first, so results do not depend on the chunking or platform
    sort. With ids, an archive item whose id equals the query's is never returned (leave-one-out);
    ranks left without an item hold index `EMPTY_INDEX` (-1) and score `EMPTY_SCORE` (-inf).
    """
    queries, archive = np.asarray(queries), np.asarray(archive)
    if queries.ndim != 2 or archive.ndim != 2 or queries.shape[1] != archive.shape[1]:
        raise ValueError(f"Need [Q, D] queries and [N, D] archive: got {queries.shape}, {archive.shape}.")
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be positive: got k={k}, chunk={chunk}.")
    if not (np.all(np.isfinite(queries)) and np.all(np.isfinite(archive))):
        raise ValueError("Descriptors contain NaN or inf.")
    nq, na = queries.shape[0], archive.shape[0]
    dtype = np.result_type(queries.dtype, archive.dtype, np.float32)
    archive_t = l2_normalise(archive.astype(dtype)).T
    codes = id_codes(query_ids, archive_ids, nq, na)
    k = min(k, na)
    all_scores = np.empty((nq, k), dtype=dtype)
    all_indices = np.empty((nq, k), dtype=np.int64)
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        scores = l2_normalise(queries[start:stop].astype(dtype)) @ archive_t
        if codes is not None:
            scores[codes[0][start:stop, None] == codes[1][None, :]] = EMPTY_SCORE
        top_scores, top_indices = _top_k(scores, k)
        top_indices[np.isneginf(top_scores)] = EMPTY_INDEX
        all_scores[start:stop], all_indices[start:stop] = top_scores, top_indices
    return all_scores, all_indices
