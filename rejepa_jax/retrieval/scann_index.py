"""ScaNN nearest-neighbour index over L2-normalised descriptors: build, search, save and safe load.

Similarity is the dot product (the cosine on unit rows). ScaNN only ever sees row numbers 0..N-1; ids stay
with the caller, so ScaNN never writes, or reads back, its pickled docid file.

Builds are deterministic given `IndexSettings.seed`: the partitioner uses k-means++ initialisation with an
explicit clustering seed (ScaNN's default random initialisation draws a fresh seed per build), so a
searcher rebuilt from autotuned settings (`index_autotune`) is the index the settings were measured on.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Literal

import numpy as np
from google.protobuf import text_format
from scann.proto import scann_pb2
from scann.scann_ops import scann_assets_pb2
from scann.scann_ops.py import scann_ops_pybind

from rejepa_jax.retrieval.exact_search import EMPTY_INDEX, EMPTY_SCORE

Searcher = scann_ops_pybind.ScannSearcher
Kind = Literal["brute_force", "tree_ah"]
KINDS: tuple[Kind, ...] = ("brute_force", "tree_ah")

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


def check_database(db: np.ndarray) -> np.ndarray:
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


def check_queries(queries: np.ndarray) -> np.ndarray:
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
    db = check_database(db)
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


def search_params(settings: IndexSettings, k: int) -> tuple[int | None, int | None]:
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
    queries = check_queries(queries)
    if len(queries) == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    reorder, leaves = search_params(settings, k)
    run = searcher.search_batched_parallel if parallel else searcher.search_batched
    indices, scores = run(queries, k, reorder, leaves)
    return _clean(indices, scores, k)


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
