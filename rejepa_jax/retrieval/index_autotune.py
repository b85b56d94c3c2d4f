"""Auto-tuning a ScaNN index: the cheapest settings that reach a recall target on sample queries.

Settings are ranked by an analytic per-query cost in units of one float multiply-add of batched
brute-force scoring, never by wall clock, so the choice is reproducible:

    brute_force: N·d
    tree_ah:     num_leaves·d                                               (score the centroids)
               + S·ceil(d / dims_per_block)·LUT16_WEIGHT                    (AH scan of S points)
               + min(reorder, S)·d·REORDER_WEIGHT                           (exact rescoring)
    with S = leaves_to_search·N / num_leaves, the expected number of scanned points (mean leaf size).

The two weights were measured once on the 2-core development machine (see the constants) and are fixed,
so the ranking of settings does not move with machine load.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from rejepa_jax.retrieval.ann_recall import per_query_recall_vs_exact
from rejepa_jax.retrieval.exact_search import exact_search
from rejepa_jax.retrieval.scann_index import (
    IndexSettings,
    build_searcher,
    check_database,
    check_queries,
    search,
)

# Cost of one 4-bit LUT16 lookup (one AH block of one point) and of one dimension of exact reordering,
# relative to one multiply-add of batched float brute force (a GEMM). Slopes of single-threaded batch
# search time against lookups and reordered dimensions, ScaNN 1.4.2, 100,000 × 384 clustered unit vectors,
# on the 2-core development machine: 1.2 and 13 (reordering gathers scattered rows; the GEMM streams).
LUT16_WEIGHT = 1.2
REORDER_WEIGHT = 13.0


def search_cost(settings: IndexSettings, num_rows: int, dim: int) -> float:
    """Analytic per-query cost in float multiply-adds (the module docstring gives the formula)."""
    if settings.kind == "brute_force":
        return float(num_rows * dim)
    scanned = settings.leaves_to_search * num_rows / settings.num_leaves
    blocks = math.ceil(dim / settings.dims_per_block)
    return float(
        settings.num_leaves * dim
        + scanned * blocks * LUT16_WEIGHT
        + min(settings.reorder, scanned) * dim * REORDER_WEIGHT
    )


# Sweep grid: leaves_to_search takes these steps per decade up to num_leaves (and num_leaves itself);
# reorder takes these multiples of k. Steps of at most 1.5x between 5k and 20k, where the picks fall:
# with (8, 12, 20) alone a 0.95 target on 1M x 384 took reorder 12k where 10k was enough.
LEAVES_STEPS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
REORDER_MULTIPLES = (1, 2, 3, 5, 8, 10, 12, 15, 20, 30, 50)

# A reorder row stops when this many more leaves together raise recall by less than PLATEAU_GAIN: the
# reordering depth caps it, and searching more leaves only costs. On 1M x 384 the full rows ran to all
# 1,000 leaves at about +0.0001 a step, 60 % of the tuning time.
PLATEAU_STEPS = 3
PLATEAU_GAIN = 0.001


def leaves_grid(num_leaves: int) -> list[int]:
    """leaves_to_search values swept for an index of `num_leaves` leaves, ascending."""
    values = {num_leaves}
    decade = 1
    while decade <= num_leaves:
        values.update(v for m in LEAVES_STEPS if (v := round(m * decade)) <= num_leaves)
        decade *= 10
    return sorted(values)


def reorder_grid(k: int, num_rows: int) -> list[int]:
    """Pre-reorder candidate counts swept, ascending (at most num_rows - 1: one slot goes to the query)."""
    return sorted({min(m * k, num_rows - 1) for m in REORDER_MULTIPLES})


def _tree_settings_for(num_rows: int, seed: int) -> IndexSettings:
    """The index autotune builds: about sqrt(N) leaves, training sample bounded at 100,000 rows."""
    num_leaves = max(1, round(math.sqrt(num_rows)))
    return IndexSettings(
        kind="tree_ah",
        num_leaves=num_leaves,
        leaves_to_search=1,
        reorder=1,
        training_sample_size=min(num_rows, 100_000),
        seed=seed,
    )


def autotune(
    db: np.ndarray,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    sample_queries: int = 4000,
    seed: int = 0,
    brute_force_below: int = 20_000,
    confidence_z: float = 3.0,
    queries: np.ndarray | None = None,
) -> tuple[IndexSettings, float, list[dict[str, Any]]]:
    """The cheapest settings (by `search_cost`) whose recall@k meets `target_recall`.

    Returns (settings, their measured recall@k, table of every setting tried, in sweep order).

    Below `brute_force_below` rows: brute force, recall 1. Otherwise one tree+AH index is built and
    (leaves_to_search, reorder) swept over `leaves_grid` × `reorder_grid`, each reorder row in ascending
    leaves until a setting qualifies, the cost passes the best so far, or recall plateaus
    (`PLATEAU_STEPS`, `PLATEAU_GAIN`). A setting qualifies when
    mean recall − confidence_z · standard error (over queries) ≥ target, so the pick holds on fresh
    queries and not only on this sample (confidence_z=0: plain point estimate). z=3 rather than 2: the
    leave-one-out bias below and the several settings near the target eat into the margin; with z=2 one
    of two 100,000 × 384 synthetic sets got 0.9486 recall on 10,000 fresh queries for a 0.95 target.
    The margin shrinks with the sample: on 1M × 384 clustered vectors the standard error near 0.96 was
    0.0026 at 1,000 queries and 0.0014 at 4,000, where the picks for 0.95 and 0.99 (2 leaves, reorder 80
    and 200; fresh-query recall 0.961 and 0.994) equal the cheapest grid settings; 1,000 queries picked
    reorder 120 and 6 leaves with reorder 500. The sample's exact search costs 4,000 × N × D
    multiply-adds: on 1M × 384 one tuning call took 193 s on 2 cores, of which the index build 78 s.

    Queries are `sample_queries` database rows drawn with `seed`, searched leave-one-out: the row is
    removed from both exact and approximate results (ScaNN is asked for k+1 neighbours and reorder+1
    candidates, so it takes no slot). A database row is an exchangeable draw from the data, so this is
    what a fresh in-distribution query sees, with no perturbation scale to pick (small: trivially easy
    queries; large: queries off the data). The row did help train the index, which flatters settings
    where the partition limits recall (+0.01 at 1-5 of 316 leaves on 100,000 × 384, +0.002 or less at
    the settings picked); the margin absorbs that. Holding the rows out of the build instead measures a
    different k-means solution than the one the caller rebuilds, which moved recall by up to ±0.01.
    Pass `queries` to tune on held-out queries instead (no exclusion), e.g. from another distribution.

    If no tree setting cheaper than brute force qualifies, the answer is brute force and the last table
    row says so. Deterministic given `seed` (query sample, index build, analytic cost).
    """
    db = check_database(db)
    n, d = db.shape
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1]: got {target_recall}.")
    if k < 1 or k >= n:
        raise ValueError(f"Need 1 <= k < N: got k={k}, N={n}.")
    brute = IndexSettings(kind="brute_force")
    brute_cost = search_cost(brute, n, d)
    brute_row = {"kind": "brute_force", "num_leaves": 0, "leaves_to_search": 0, "reorder": 0, "recall": 1.0}
    brute_row |= {"recall_se": 0.0, "cost": brute_cost, "relative_cost": 1.0, "qualifies": True}
    if n < brute_force_below:
        return brute, 1.0, [brute_row | {"note": f"N={n} < brute_force_below={brute_force_below}"}]

    rng = np.random.default_rng(seed)
    if queries is None:
        rows = np.sort(rng.choice(n, size=min(sample_queries, n), replace=False))
        query_desc, extra = db[rows], 1
        _, exact = exact_search(query_desc, db, k, query_ids=rows, archive_ids=np.arange(n))
    else:
        rows, query_desc, extra = None, check_queries(queries), 0
        _, exact = exact_search(query_desc, db, k)

    base = _tree_settings_for(n, seed)
    searcher = build_searcher(db, base, num_neighbors=k)

    def recall_of(settings: IndexSettings) -> np.ndarray:
        # One more neighbour and candidate for the query's own row (reorder >= k, so search keeps it).
        wider = dataclasses.replace(settings, reorder=settings.reorder + extra)
        indices, _ = search(searcher, query_desc, k + extra, wider)
        if rows is not None:  # Drop each query's own row (stable: the others keep their order).
            order = np.argsort(indices == rows[:, None], axis=1, kind="stable")
            indices = np.take_along_axis(indices, order, axis=1)[:, :k]
        return per_query_recall_vs_exact(indices, exact, k)

    table: list[dict[str, Any]] = []
    best: tuple[IndexSettings, float, float] | None = None  # (settings, recall, cost)
    for reorder in reorder_grid(k, n):
        row_recalls: list[float] = []
        for leaves in leaves_grid(base.num_leaves):
            settings = dataclasses.replace(base, leaves_to_search=leaves, reorder=reorder)
            cost = search_cost(settings, n, d)
            # Cost grows with leaves at fixed reorder: nothing further along this row can win.
            if cost >= brute_cost or (best is not None and cost >= best[2]):
                break
            if (
                len(row_recalls) > PLATEAU_STEPS
                and row_recalls[-1] - row_recalls[-1 - PLATEAU_STEPS] < PLATEAU_GAIN
            ):
                break
            per_query = recall_of(settings)
            recall = float(per_query.mean())
            row_recalls.append(recall)
            se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
            qualifies = recall - confidence_z * se >= target_recall
            table.append(
                {
                    "kind": "tree_ah",
                    "num_leaves": base.num_leaves,
                    "leaves_to_search": leaves,
                    "reorder": reorder,
                    "recall": recall,
                    "recall_se": se,
                    "cost": cost,
                    "relative_cost": cost / brute_cost,
                    "qualifies": qualifies,
                }
            )
            if qualifies:
                best = (settings, recall, cost)
                break
    if best is None:
        note = (
            f"no tree_ah setting cheaper than brute force reached recall@{k} >= {target_recall} "
            f"(z={confidence_z}); falling back to brute force"
        )
        return brute, 1.0, [*table, brute_row | {"note": note}]
    return best[0], best[1], table
