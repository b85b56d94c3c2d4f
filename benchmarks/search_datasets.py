"""The search benchmark's datasets: an exported index's descriptors, or synthetic clustered vectors."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax.retrieval import manifest
from rejepa_jax.retrieval.descriptor_store import read_descriptors
from rejepa_jax.retrieval.exact_search import l2_normalise


@dataclasses.dataclass
class Dataset:
    """A database of unit rows and held-out queries; `describe` is what the JSON records about it."""

    name: str
    db: np.ndarray
    queries: np.ndarray
    describe: dict[str, Any]


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
    data = clustered_unit_vectors(rows + num_queries, dim, clusters, seed, noise)
    info = {"source": f"clustered_unit_vectors(clusters={clusters}, noise={noise}, seed={seed})"}
    info["query_source"] = f"{num_queries} fresh draws from the same distribution"
    return Dataset("synthetic", data[:rows], data[rows:], info)
