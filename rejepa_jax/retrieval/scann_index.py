"""ScaNN nearest-neighbour index over L2-normalised descriptors: build, search, autotune, save, benchmark.

Similarity is the dot product (the cosine on unit rows). ScaNN only ever sees row numbers 0..N-1; ids stay
with the caller, so ScaNN never writes, or reads back, its pickled docid file.

Builds are deterministic given `IndexSettings.seed`: the partitioner uses k-means++ initialisation with an
explicit clustering seed (ScaNN's default random initialisation draws a fresh seed per build), so a
searcher rebuilt from autotuned settings is the index the settings were measured on.

Autotune picks the cheapest setting by an analytic per-query cost in units of one float multiply-add of
batched brute-force scoring, never by wall clock, so the choice is reproducible:

    brute_force: N·d
    tree_ah:     num_leaves·d                                               (score the centroids)
               + S·ceil(d / dims_per_block)·LUT16_WEIGHT                    (AH scan of S points)
               + min(reorder, S)·d·REORDER_WEIGHT                           (exact rescoring)
    with S = leaves_to_search·N / num_leaves, the expected number of scanned points (mean leaf size).

The two weights were measured once on the 2-core development machine (see the constants) and are fixed,
so the ranking of settings does not move with machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import tempfile
import time
from typing import Any, Literal

import numpy as np
from google.protobuf import text_format
from scann.proto import scann_pb2
from scann.scann_ops import scann_assets_pb2
from scann.scann_ops.py import scann_ops_pybind

from rejepa_jax.evaluation.retrieval_metrics import EMPTY_INDEX, EMPTY_SCORE, exact_search

Searcher = scann_ops_pybind.ScannSearcher
Kind = Literal["brute_force", "tree_ah"]
KINDS: tuple[Kind, ...] = ("brute_force", "tree_ah")

# Cost of one 4-bit LUT16 lookup (one AH block of one point) and of one dimension of exact reordering,
# relative to one multiply-add of batched float brute force (a GEMM). Slopes of single-threaded batch
# search time against lookups and reordered dimensions, ScaNN 1.4.2, 100,000 × 384 clustered unit vectors,
# on the 2-core development machine: 1.2 and 13 (reordering gathers scattered rows; the GEMM streams).
LUT16_WEIGHT = 1.2
REORDER_WEIGHT = 13.0

# Unit-norm tolerance for database rows: ScaNN scores raw dot products, exact search normalises.
_NORM_TOLERANCE = 1e-3
_ASSETS_FILE = "scann_assets.pbtxt"


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """How to build and query one index; `dataclasses.asdict` gives plain JSON.

    `leaves_to_search` and `reorder` (pre-reorder candidates) are search-time parameters: they are
    written into the built config as defaults and passed explicitly by `search`. The other fields fix
    the build. Brute force ignores everything but `kind`.
    """

    kind: Kind = "brute_force"
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0
    training_sample_size: int = 100_000
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}: got {self.kind!r}.")
        if not math.isfinite(self.anisotropic_threshold):
            raise ValueError("anisotropic_threshold must be finite (it is stored as JSON).")
        if self.kind == "tree_ah":
            if self.num_leaves < 1 or not 1 <= self.leaves_to_search <= self.num_leaves:
                raise ValueError(
                    f"tree_ah needs 1 <= leaves_to_search <= num_leaves: got {self.leaves_to_search}, "
                    f"{self.num_leaves}."
                )
            if self.reorder < 1 or self.training_sample_size < 1 or self.dims_per_block < 1:
                raise ValueError("tree_ah needs positive reorder, training_sample_size and dims_per_block.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IndexSettings:
        """Inverse of `dataclasses.asdict`, e.g. after a JSON round trip."""
        return cls(**values)


def _check_database(db: np.ndarray) -> np.ndarray:
    """Contiguous float32 [N, D] with finite, unit-norm (or zero) rows."""
    db = np.ascontiguousarray(db, dtype=np.float32)
    if db.ndim != 2 or db.shape[0] == 0 or db.shape[1] == 0:
        raise ValueError(f"Need a non-empty [N, D] database: got {db.shape}.")
    if not np.all(np.isfinite(db)):
        raise ValueError("Database contains NaN or inf.")
    norms = np.linalg.norm(db, axis=1)
    bad = np.flatnonzero((np.abs(norms - 1) > _NORM_TOLERANCE) & (norms > 0))
    if bad.size:
        raise ValueError(
            f"{bad.size} database rows are not L2-normalised (first: row {bad[0]}, norm "
            f"{norms[bad[0]]:.4f}); dot-product search would not rank by cosine."
        )
    return db


def _check_queries(queries: np.ndarray) -> np.ndarray:
    """Contiguous float32 [Q, D]; ScaNN itself rejects a D that differs from the database's."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2:
        raise ValueError(f"Need [Q, D] queries: got {queries.shape}.")
    if not np.all(np.isfinite(queries)):
        raise ValueError("Queries contain NaN or inf.")
    return queries


def _seeded(config_text: str, settings: IndexSettings) -> str:
    """The config with every training seed set from `settings.seed` (offset by one: 0 can mean unset)."""
    config = text_format.Parse(config_text, scann_pb2.ScannConfig())
    seed = settings.seed + 1
    if config.HasField("partitioning"):
        config.partitioning.clustering_seed = seed
    if config.HasField("hash"):
        config.hash.asymmetric_hash.clustering_seed = seed
        config.hash.asymmetric_hash.sampling_seed = seed
    return text_format.MessageToString(config)


def build_searcher(
    db: np.ndarray, settings: IndexSettings, *, num_neighbors: int = 10, training_threads: int = 0
) -> Searcher:
    """A ScaNN searcher over the rows of `db` (row number = result index; no docids, so no pickle).

    `training_threads=0` lets ScaNN use every core; the result does not depend on it.
    """
    db = _check_database(db)
    n = db.shape[0]
    builder = scann_ops_pybind.builder(db, num_neighbors, "dot_product")
    if settings.kind == "brute_force":
        builder = builder.score_brute_force()
    else:
        if settings.num_leaves > n:
            raise ValueError(f"num_leaves={settings.num_leaves} exceeds the {n} database rows.")
        sample = min(settings.training_sample_size, n)
        builder = (
            # Spherical k-means: the descriptors are unit vectors ranked by dot product, so leaves are
            # routed by normalised centres; raw means send about 1 in 6 queries to the wrong leaf.
            builder.tree(
                num_leaves=settings.num_leaves,
                num_leaves_to_search=settings.leaves_to_search,
                training_sample_size=sample,
                random_init=False,
                spherical=True,
            )
            .score_ah(
                settings.dims_per_block,
                anisotropic_quantization_threshold=settings.anisotropic_threshold,
                training_sample_size=sample,
            )
            .reorder(settings.reorder)
        )
    config = _seeded(builder.create_config(), settings)
    return scann_ops_pybind.create_searcher(db, config, training_threads)


def _clean(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """ScaNN pads missing ranks with index 0 and a NaN score; use exact_search's -1 / -inf instead."""
    indices = np.asarray(indices).astype(np.int64).reshape(len(indices), -1)
    scores = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)
    if indices.shape[1] < k:
        pad = ((0, 0), (0, k - indices.shape[1]))
        indices = np.pad(indices, pad, constant_values=EMPTY_INDEX)
        scores = np.pad(scores, pad, constant_values=np.nan)
    missing = np.isnan(scores)
    indices[missing] = EMPTY_INDEX
    scores[missing] = EMPTY_SCORE
    return indices, scores


def _raw_search(
    searcher: Searcher, queries: np.ndarray, k: int, reorder: int | None, leaves: int | None, parallel: bool
) -> tuple[np.ndarray, np.ndarray]:
    if len(queries) == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    run = searcher.search_batched_parallel if parallel else searcher.search_batched
    indices, scores = run(queries, k, reorder, leaves)
    return _clean(indices, scores, k)


def _search_params(settings: IndexSettings, k: int) -> tuple[int | None, int | None]:
    """(pre-reorder candidates, leaves to search); None leaves ScaNN's brute force alone."""
    if settings.kind == "brute_force":
        return None, None
    return max(settings.reorder, k), settings.leaves_to_search


def search(
    searcher: Searcher, queries: np.ndarray, k: int, settings: IndexSettings, *, parallel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every query: (indices int64 [Q, k], scores float32 [Q, k]), best first.

    Uses the settings' search-time parameters rather than the searcher's built-in defaults, so one
    searcher can serve any (leaves_to_search, reorder). Ranks without a result hold -1 / -inf, as in
    `exact_search`. `parallel` spreads the batch over ScaNN's thread pool.
    """
    if k < 1:
        raise ValueError(f"k must be positive: got {k}.")
    queries = _check_queries(queries)
    reorder, leaves = _search_params(settings, k)
    return _raw_search(searcher, queries, k, reorder, leaves, parallel)


# ---------------------------------------------------------------------------------------------------
# Recall and cost.


def _per_query_recall(approx_indices: np.ndarray, exact_indices: np.ndarray, k: int) -> np.ndarray:
    """[Q] fraction of each query's valid exact top-k ids present in its approximate top-k."""
    approx = np.asarray(approx_indices)[:, :k]
    exact = np.asarray(exact_indices)[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"Query counts differ: {approx.shape[0]} approximate, {exact.shape[0]} exact.")
    valid = exact != EMPTY_INDEX
    found = ((exact[:, :, None] == approx[:, None, :]).any(axis=2) & valid).sum(axis=1)
    wanted = valid.sum(axis=1)
    return np.where(wanted > 0, found / np.maximum(wanted, 1), 1.0)


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k|.

    Exact entries of -1 (fewer than k archive items) are not counted; a query with no valid exact
    entry scores 1. Ties at the k-th exact score count the tied item exact_search chose.
    """
    if k < 1:
        raise ValueError(f"k must be positive: got {k}.")
    return float(_per_query_recall(approx_indices, exact_indices, k).mean())


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


# ---------------------------------------------------------------------------------------------------
# Autotune.

# Sweep grid: leaves_to_search takes these steps per decade up to num_leaves (and num_leaves itself);
# reorder takes these multiples of k.
LEAVES_STEPS = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
REORDER_MULTIPLES = (1, 2, 3, 5, 8, 12, 20, 30, 50)


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
    sample_queries: int = 1000,
    seed: int = 0,
    brute_force_below: int = 20_000,
    confidence_z: float = 3.0,
    queries: np.ndarray | None = None,
) -> tuple[IndexSettings, float, list[dict[str, Any]]]:
    """The cheapest settings (by `search_cost`) whose recall@k meets `target_recall`.

    Returns (settings, their measured recall@k, table of every setting tried, in sweep order).

    Below `brute_force_below` rows: brute force, recall 1. Otherwise one tree+AH index is built and
    (leaves_to_search, reorder) swept over `leaves_grid` × `reorder_grid`. A setting qualifies when
    mean recall − confidence_z · standard error (over queries) ≥ target, so the pick holds on fresh
    queries and not only on this sample (confidence_z=0: plain point estimate). z=3 rather than 2: the
    leave-one-out bias below and the several settings near the target eat into the margin; with z=2 one
    of two 100,000 × 384 synthetic sets got 0.9486 recall on 10,000 fresh queries for a 0.95 target.
    The standard error is about 0.006 near 0.95 at 1,000 queries; more `sample_queries` narrow the
    margin and so buy cheaper settings.

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
    db = _check_database(db)
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
        rows, query_desc, extra = None, _check_queries(queries), 0
        _, exact = exact_search(query_desc, db, k)

    base = _tree_settings_for(n, seed)
    searcher = build_searcher(db, base, num_neighbors=k)

    def recall_of(settings: IndexSettings) -> np.ndarray:
        indices, _ = _raw_search(
            searcher, query_desc, k + extra, settings.reorder + extra, settings.leaves_to_search, True
        )
        if rows is not None:  # Drop each query's own row (stable: the others keep their order).
            order = np.argsort(indices == rows[:, None], axis=1, kind="stable")
            indices = np.take_along_axis(indices, order, axis=1)[:, :k]
        return _per_query_recall(indices, exact, k)

    table: list[dict[str, Any]] = []
    best: tuple[IndexSettings, float, float] | None = None  # (settings, recall, cost)
    for reorder in reorder_grid(k, n):
        for leaves in leaves_grid(base.num_leaves):
            settings = dataclasses.replace(base, leaves_to_search=leaves, reorder=reorder)
            cost = search_cost(settings, n, d)
            # Cost grows with leaves at fixed reorder: nothing further along this row can win.
            if cost >= brute_cost or (best is not None and cost >= best[2]):
                break
            per_query = recall_of(settings)
            recall = float(per_query.mean())
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


# ---------------------------------------------------------------------------------------------------
# Save and load.


class UnsafeIndexError(ValueError):
    """An index directory holds something that loading would execute or read from outside it."""


def _files_under(directory: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _refuse_pickles(directory: pathlib.Path) -> None:
    pickles = [name for name in _files_under(directory) if name.lower().endswith(".pkl")]
    if pickles:
        raise UnsafeIndexError(
            f"Refusing to load {directory}: it holds pickle file(s) {', '.join(pickles)}. ScaNN unpickles "
            "scann_docids.pkl on load, which can run arbitrary code; indexes written by save() never "
            "contain one."
        )


def save(searcher: Searcher, directory: str | pathlib.Path) -> list[str]:
    """Serialise with ScaNN into `directory` (new or empty); returns the files written, relative to it.

    Asset paths are written relative, so the directory can be moved or copied as a whole.
    """
    if searcher.docids is not None:
        raise ValueError("The searcher carries docids, which ScaNN would pickle; keep ids outside the index.")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; save into a new directory.")
    searcher.serialize(str(directory), relative_path=True)
    return _files_under(directory)


def load(directory: str | pathlib.Path) -> Searcher:
    """Load an index written by `save`, refusing pickles and asset paths that leave the directory.

    Builds the searcher directly rather than through ScaNN's `load_searcher`, which would unpickle a
    docid file and, without a `scann_assets.pbtxt`, write one into the directory.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory.")
    _refuse_pickles(directory)
    assets_file = directory / _ASSETS_FILE
    if not assets_file.is_file():
        raise FileNotFoundError(f"{assets_file} is missing: {directory} was not written by save().")
    assets_text = assets_file.read_text()
    assets = text_format.Parse(assets_text, scann_assets_pb2.ScannAssets())
    root = directory.resolve()
    for asset in assets.assets:
        path = (root / asset.asset_path).resolve()
        if pathlib.PurePath(asset.asset_path).is_absolute() or not path.is_relative_to(root):
            raise UnsafeIndexError(f"Refusing to load {directory}: asset {asset.asset_path!r} is outside it.")
        if not path.is_file():
            raise FileNotFoundError(f"Asset {asset.asset_path!r} listed in {assets_file} is missing.")
    return Searcher(scann_ops_pybind.scann_pybind.ScannNumpy(str(root), assets_text))


# ---------------------------------------------------------------------------------------------------
# Benchmark and synthetic data.


def index_bytes(directory: str | pathlib.Path) -> int:
    """Total size of the files in a saved index directory."""
    directory = pathlib.Path(directory)
    return sum((directory / name).stat().st_size for name in _files_under(directory))


def benchmark(
    searcher: Searcher,
    queries: np.ndarray,
    k: int,
    settings: IndexSettings,
    *,
    repeats: int = 3,
    index_dir: str | pathlib.Path | None = None,
    single_queries: int = 200,
) -> dict[str, float]:
    """Batch QPS (all queries in one call, median of `repeats`), single-query latency, index size.

    Latency is measured one query at a time over the first `single_queries` queries, as a serving path
    would call it. `bytes_per_vector` is the saved index size over the row count; without `index_dir`
    the searcher is saved to a temporary directory to measure it.
    """
    queries = _check_queries(queries)
    if len(queries) == 0 or repeats < 1:
        raise ValueError("Need at least one query and one repeat.")
    search(searcher, queries[: min(len(queries), 32)], k, settings)  # Warm caches and the thread pool.
    batch_seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(searcher, queries, k, settings)
        batch_seconds.append(time.perf_counter() - start)
    reorder, leaves = _search_params(settings, k)
    latencies_ms = []
    for query in queries[:single_queries]:
        start = time.perf_counter()
        searcher.search(query, k, -1 if reorder is None else reorder, -1 if leaves is None else leaves)
        latencies_ms.append((time.perf_counter() - start) * 1e3)
    if index_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            save(searcher, tmp)
            size = index_bytes(tmp)
    else:
        size = index_bytes(index_dir)
    return {
        "batch_qps": len(queries) / float(np.median(batch_seconds)),
        "latency_p50_ms": float(np.percentile(latencies_ms, 50)),
        "latency_p99_ms": float(np.percentile(latencies_ms, 99)),
        "bytes_per_vector": size / searcher.size(),
        "num_queries": float(len(queries)),
    }


def clustered_unit_vectors(n: int, d: int, num_clusters: int, seed: int, noise: float) -> np.ndarray:
    """[n, d] float32 unit rows: a random unit centre (one of `num_clusters`) plus noise, renormalised.

    `noise` is the expected norm of the perturbation relative to the unit centre. The centres depend on
    `seed` only, so the first rows of `clustered_unit_vectors(n + q, ...)` are a database and the rest
    fresh queries from the same distribution.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_clusters, size=n)
    x = centres[labels] + rng.standard_normal((n, d), dtype=np.float32) * np.float32(noise / math.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)


def main(argv: list[str] | None = None) -> None:
    """Autotune, rebuild and benchmark on synthetic clustered data; one JSON line per result."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1_000, help="fresh queries timed by benchmark")
    parser.add_argument("--recall_queries", type=int, default=10_000, help="fresh queries for recall")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    num_fresh = max(args.queries, args.recall_queries)
    data = clustered_unit_vectors(args.rows + num_fresh, args.dim, args.clusters, args.seed, args.noise)
    db, fresh = data[: args.rows], data[args.rows :]
    queries = fresh[: args.queries]
    start = time.perf_counter()
    exact_search(queries, db, args.k)
    exact_qps = len(queries) / (time.perf_counter() - start)
    print(json.dumps({"method": "exact_search (numpy)", "batch_qps": exact_qps}), flush=True)
    exact = exact_search(fresh[: args.recall_queries], db, args.k)[1]

    candidates = [("brute_force", IndexSettings(kind="brute_force"), 1.0, 0, 0.0)]
    for target in args.targets:
        start = time.perf_counter()
        settings, recall, table = autotune(db, target_recall=target, k=args.k, seed=args.seed)
        candidates.append((f"autotune {target}", settings, recall, len(table), time.perf_counter() - start))
    for name, settings, tuned_recall, tried, tune_seconds in candidates:
        start = time.perf_counter()
        searcher = build_searcher(db, settings, num_neighbors=args.k)
        build_seconds = time.perf_counter() - start
        indices, _ = search(searcher, fresh[: args.recall_queries], args.k, settings)
        result = {"method": name, "settings": dataclasses.asdict(settings), "tuned_recall": tuned_recall}
        result |= {"settings_tried": tried, "autotune_s": tune_seconds, "build_s": build_seconds}
        result |= {"fresh_recall": recall_at_k(indices, exact, args.k)}
        result |= {"cost": search_cost(settings, *db.shape)}
        result |= benchmark(searcher, queries, args.k, settings)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
