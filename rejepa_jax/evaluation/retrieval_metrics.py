"""The content-based image retrieval metrics, in plain numpy (exact search: retrieval/exact_search.py).

Everything here is pure and runs on the host: descriptors go in, numbers come out. The formulas:

- Ranking: cosine similarity on L2-normalised rows, ties broken by the lower archive index.
- Binary relevance: single-label rel_i = 1[y_i = y_q]; multi-label rel_i = 1[|Y_q ∩ Y_i| ≥ 1].
  Graded relevance (multi-label NDCG): r_i = |Y_q ∩ Y_i|; for single-label data r_i = rel_i.
- R = number of relevant archive items for the query (the query itself excluded under leave-one-out);
  R_K = Σ_{i≤K} rel_i.
- P@K = R_K / K and R@K = R_K / R.
- mAP@K: S_K = Σ_{k≤K} P@k·rel_k, divided by one of
  `"retrieved"` (a) R_K, `"min_k_r"` (b) min(K, R), `"total"` (c) R.
- NDCG@K = DCG@K / IDCG@K with DCG@K = Σ_{i≤K} (2^{r_i} − 1) / log₂(1 + i); IDCG@K is the DCG of the
  ideal ordering of the whole archive (query excluded under leave-one-out).
- CSMAE F1@K (multi-label): p_i = |Y_q∩Y_i|/|Y_i|, r_i = |Y_q∩Y_i|/|Y_q|; P and R are the means over
  queries of (1/K)Σ_{i≤K} p_i and (1/K)Σ_{i≤K} r_i, and F1 = 2PR/(P + R) on those means.

Conventions for the edge cases (all metrics are means over *every* query):
- A query with no relevant item (R = 0) scores AP 0 under all three normalisations, R@K 0 and NDCG 0;
  it is kept in the mean rather than dropped, so a report always averages over the same query set.
- Any zero denominator (R_K = 0, min(K, R) = 0, IDCG = 0, P + R = 0, |Y_i| = 0, |Y_q| = 0) gives 0.
- K larger than the archive: the missing ranks count as retrieved-but-not-relevant, so P@K keeps the
  denominator K (it cannot reach 1) and the other metrics are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rejepa_jax.retrieval.exact_search import DEFAULT_CHUNK, EMPTY_INDEX, exact_search, id_codes

Normalisation = Literal["retrieved", "min_k_r", "total"]
NORMALISATIONS: tuple[Normalisation, ...] = ("retrieved", "min_k_r", "total")

# ---------------------------------------------------------------------------------------------------
# Relevance.


def single_label_relevance(query_labels: np.ndarray, archive_labels: np.ndarray) -> np.ndarray:
    """[Q, N] boolean rel_qi = 1[y_i = y_q]."""
    return np.asarray(query_labels)[:, None] == np.asarray(archive_labels)[None, :]


def multi_label_overlap(query_labels: np.ndarray, archive_labels: np.ndarray) -> np.ndarray:
    """[Q, N] integer |Y_q ∩ Y_i| from multi-hot rows: the graded relevance r_qi."""
    q = (np.asarray(query_labels) != 0).astype(np.float32)
    a = (np.asarray(archive_labels) != 0).astype(np.float32)
    # Exact: float32 holds every integer count up to 2^24 labels.
    return np.rint(q @ a.T).astype(np.int64)


def multi_label_relevance(query_labels: np.ndarray, archive_labels: np.ndarray) -> np.ndarray:
    """[Q, N] boolean rel_qi = 1[|Y_q ∩ Y_i| ≥ 1] (at least one shared label)."""
    return multi_label_overlap(query_labels, archive_labels) >= 1


# ---------------------------------------------------------------------------------------------------
# Per-query metrics on ranked relevance. `rel` is [Q, L]: column j holds rank j + 1 of each query's
# result list; ranks beyond L count as not relevant.


def _first_k(x: np.ndarray, k: int) -> np.ndarray:
    """The first k ranks of x [Q, L], zero-padded when L < k."""
    x = np.asarray(x)
    if x.shape[1] >= k:
        return x[:, :k]
    return np.pad(x, ((0, 0), (0, k - x.shape[1])))


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """[Q] P@K = R_K / K."""
    return _first_k(rel, k).astype(np.float64).sum(axis=1) / k


def recall_at_k(rel: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """[Q] R@K = R_K / R (0 when R = 0)."""
    return _safe_divide(_first_k(rel, k).sum(axis=1), num_relevant)


def average_precision_at_k(
    rel: np.ndarray, num_relevant: np.ndarray, k: int, normalisation: Normalisation
) -> np.ndarray:
    """[Q] truncated AP@K = S_K / denominator, S_K = Σ_{j≤K} P@j·rel_j; see the module docstring."""
    rel_k = _first_k(rel, k).astype(np.float64)
    hits = np.cumsum(rel_k, axis=1)
    summed = (hits / np.arange(1, k + 1) * rel_k).sum(axis=1)
    num_relevant = np.asarray(num_relevant)
    if normalisation == "retrieved":
        den = hits[:, -1]
    elif normalisation == "min_k_r":
        den = np.minimum(k, num_relevant)
    elif normalisation == "total":
        den = num_relevant
    else:
        raise ValueError(f"Unknown mAP normalisation {normalisation!r}; expected one of {NORMALISATIONS}.")
    return _safe_divide(summed, den)


def dcg_at_k(grades: np.ndarray, k: int) -> np.ndarray:
    """[Q] DCG@K = Σ_{i≤K} (2^{r_i} − 1) / log₂(1 + i) for ranked graded relevance [Q, L]."""
    gains = np.exp2(_first_k(grades, k).astype(np.float64)) - 1.0
    return (gains / np.log2(np.arange(2, k + 2))).sum(axis=1)


def ndcg_at_k(grades: np.ndarray, ideal_grades: np.ndarray, k: int) -> np.ndarray:
    """[Q] NDCG@K; `ideal_grades` [Q, ≥K] is each query's archive grades sorted in decreasing order."""
    return _safe_divide(dcg_at_k(grades, k), dcg_at_k(ideal_grades, k))


def csmae_precision_recall_at_k(
    overlap: np.ndarray, retrieved_sizes: np.ndarray, query_sizes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """[Q] per-query (1/K)Σ p_i and (1/K)Σ r_i of the CSMAE protocol.

    `overlap` [Q, L] is |Y_q ∩ Y_i| by rank, `retrieved_sizes` [Q, L] is |Y_i| by rank and
    `query_sizes` [Q] is |Y_q|. F1 is then formed from the means over queries (`csmae_f1`).
    """
    overlap_k = _first_k(overlap, k)
    p = _safe_divide(overlap_k, _first_k(retrieved_sizes, k)).sum(axis=1) / k
    r = _safe_divide(overlap_k, np.asarray(query_sizes)[:, None]).sum(axis=1) / k
    return p, r


def csmae_f1(precision: float, recall: float) -> float:
    """F1 = 2PR / (P + R) on query-averaged P and R (0 when both are 0), as CSMAE reports it."""
    return 0.0 if precision + recall <= 0 else 2.0 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------------
# The report.


def retrieval_report(
    query_desc: np.ndarray,
    query_labels: np.ndarray,
    archive_desc: np.ndarray,
    archive_labels: np.ndarray,
    ks: Sequence[int],
    *,
    multi_label: bool,
    query_ids: Sequence | None = None,
    archive_ids: Sequence | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> dict[str, float]:
    """Exact search plus every metric at every K, as a flat dict of query means.

    Keys, for each K: `p@K`, `r@K`, `map@K/retrieved`, `map@K/min_k_r`, `map@K/total`, `ndcg@K`, and
    for multi-label data `f1@K` (CSMAE). Labels are integer classes [N] for single-label data and
    multi-hot rows [N, C] for multi-label data. With ids, an archive item sharing the query's id is
    neither retrieved nor counted in R or the ideal DCG (leave-one-out).
    """
    k_max = max(int(k) for k in ks) if len(ks) else 0
    if k_max < 1:
        raise ValueError(f"ks must be positive integers: got {list(ks)}.")
    _, indices = exact_search(
        query_desc, archive_desc, k_max, query_ids=query_ids, archive_ids=archive_ids, chunk=chunk
    )
    return ranking_report(
        indices,
        query_labels,
        archive_labels,
        ks,
        multi_label=multi_label,
        query_ids=query_ids,
        archive_ids=archive_ids,
        chunk=chunk,
    )


def ranking_report(
    indices: np.ndarray,
    query_labels: np.ndarray,
    archive_labels: np.ndarray,
    ks: Sequence[int],
    *,
    multi_label: bool,
    query_ids: Sequence | None = None,
    archive_ids: Sequence | None = None,
    chunk: int = DEFAULT_CHUNK,
    per_query: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every metric at every K for a given ranking `indices` [Q, >=max K] (exact or approximate).

    Same keys as `retrieval_report`. When `per_query` is a dict, it receives the per-query values
    behind each key (for per-class breakdowns).
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers: got {ks}.")
    query_labels, archive_labels = np.asarray(query_labels), np.asarray(archive_labels)
    label_ndim = 2 if multi_label else 1
    if query_labels.ndim != label_ndim or archive_labels.ndim != label_ndim:
        raise ValueError(
            f"{'Multi' if multi_label else 'Single'}-label data needs {label_ndim}-D labels: got "
            f"{query_labels.shape} and {archive_labels.shape}."
        )
    nq, na = len(query_labels), len(archive_labels)
    k_max = ks[-1]
    indices = np.asarray(indices)[:, :k_max]
    if len(indices) != nq:
        raise ValueError(f"Need one ranking per query: {len(indices)} rankings for {nq} queries.")
    if indices.shape[1] < k_max:  # Fewer results than K: the missing ranks count as not relevant.
        pad = np.full((nq, k_max - indices.shape[1]), EMPTY_INDEX, dtype=indices.dtype)
        indices = np.concatenate([indices, pad], axis=1)
    codes = id_codes(query_ids, archive_ids, nq, na)
    valid = indices != EMPTY_INDEX
    safe_indices = np.where(valid, indices, 0)
    # Ranked graded relevance, R and the ideal grades come from the full [chunk, N] grade matrix.
    grades = np.zeros(indices.shape, dtype=np.int64)
    num_relevant = np.zeros(nq, dtype=np.int64)
    ideal = np.zeros((nq, k_max), dtype=np.int64)
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        if multi_label:
            full = multi_label_overlap(query_labels[start:stop], archive_labels)
        else:
            full = single_label_relevance(query_labels[start:stop], archive_labels).astype(np.int64)
        if codes is not None:
            full[codes[0][start:stop, None] == codes[1][None, :]] = 0
        num_relevant[start:stop] = (full > 0).sum(axis=1)
        top = -np.sort(-full, axis=1)[:, :k_max]
        ideal[start:stop, : top.shape[1]] = top
        grades[start:stop] = np.where(
            valid[start:stop], np.take_along_axis(full, safe_indices[start:stop], 1), 0
        )
    rel = grades > 0

    if multi_label:
        retrieved_sizes = np.where(valid, (archive_labels != 0).sum(axis=1)[safe_indices], 0)
        query_sizes = (query_labels != 0).sum(axis=1)

    values: dict[str, np.ndarray] = {}
    report: dict[str, float] = {}
    for k in ks:
        values[f"p@{k}"] = precision_at_k(rel, k)
        values[f"r@{k}"] = recall_at_k(rel, num_relevant, k)
        for norm in NORMALISATIONS:
            values[f"map@{k}/{norm}"] = average_precision_at_k(rel, num_relevant, k, norm)
        values[f"ndcg@{k}"] = ndcg_at_k(grades, ideal, k)
        if multi_label:
            p, r = csmae_precision_recall_at_k(grades, retrieved_sizes, query_sizes, k)
            report[f"f1@{k}"] = csmae_f1(float(p.mean()), float(r.mean()))
    report.update({key: float(v.mean()) for key, v in values.items()})
    if per_query is not None:
        per_query.update(values)
    return report
