"""ScaNN grid: one tree+AH index swept over leaves_to_search × reorder."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks.search_datasets import Dataset
from benchmarks.search_peers.common import Options, Row, log, make_row
from benchmarks.search_peers.sweep import Sweep, sweep
from rejepa_jax.retrieval import scann_index
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.index_autotune import leaves_grid
from rejepa_jax.retrieval.index_speed import measure_speed
from rejepa_jax.retrieval.scann_index import IndexSettings, Searcher


@dataclasses.dataclass
class GridIndex:
    """The built grid index, saved to `directory` (its size); autotuned settings are timed on it too."""

    base: IndexSettings  # Search-time fields set to 1; the build fields of every grid point.
    searcher: Searcher
    directory: pathlib.Path
    build: dict[str, Any]  # build_s and build_label of its rows.
    ds: Dataset
    exact: np.ndarray
    opts: Options

    def recall(self, settings: IndexSettings) -> float:
        """recall@k of `settings` against exact search on the dataset's queries."""
        indices, _ = scann_index.search(self.searcher, self.ds.queries, self.opts.k, settings)
        return recall_vs_exact_at_k(indices, self.exact, self.opts.k)

    def measure(self, settings: IndexSettings) -> dict[str, float]:
        """Speed of `settings` on this index, by the package's protocol."""
        return measure_speed(
            self.searcher,
            self.ds.queries,
            self.opts.k,
            settings,
            repeats=self.opts.repeats,
            index_dir=self.directory,
            single_queries=self.opts.single_queries,
        )

    def builds(self, settings: IndexSettings) -> bool:
        """Whether `settings` describe this very index (only their search-time fields may differ)."""
        return dataclasses.replace(settings, leaves_to_search=1, reorder=1) == self.base


@contextlib.contextmanager
def grid_index(ds: Dataset, exact: np.ndarray, opts: Options) -> Iterator[GridIndex]:
    """Build the grid index with autotune's own tree settings (unless `num_leaves` overrides them).

    Builds are deterministic given the seed, so an autotuned setting timed here is timed on the very
    index it was tuned on. The saved copy lives as long as the context.
    """
    n = ds.db.shape[0]
    base = IndexSettings(
        kind="tree_ah",
        num_leaves=opts.num_leaves or max(1, round(math.sqrt(n))),
        leaves_to_search=1,
        reorder=1,
        training_sample_size=min(n, opts.training_sample),
        seed=opts.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        searcher = scann_index.build_searcher(ds.db, base, num_neighbors=opts.k)
        build_s = time.perf_counter() - start
        searcher.set_num_threads(opts.threads)
        directory = pathlib.Path(tmp) / "grid"
        scann_index.save(searcher, directory)
        log(f"scann: built {base.num_leaves} leaves in {build_s:.1f} s")
        build = {
            "build_s": build_s,
            "build_label": f"{base.num_leaves} leaves, AH {base.dims_per_block} dims/block",
        }
        yield GridIndex(base, searcher, directory, build, ds, exact, opts)


def run_grid(grid: GridIndex) -> tuple[list[Row], list[Sweep]]:
    """One sweep of leaves_to_search per reorder depth (`reorder_multiples` × k), every point timed."""
    opts, base = grid.opts, grid.base
    rows: list[Row] = []
    sweeps: list[Sweep] = []
    for multiple in opts.reorder_multiples:
        reorder = min(multiple * opts.k, grid.ds.db.shape[0] - 1)

        def at(leaves: int, reorder: int = reorder) -> IndexSettings:
            return dataclasses.replace(base, leaves_to_search=leaves, reorder=reorder)

        swept = sweep(
            "scann",
            {"reorder": reorder},
            "leaves_to_search",
            leaves_grid(base.num_leaves),
            lambda leaves, at=at: grid.recall(at(leaves)),
            stop_at=max(opts.targets),
            min_gain=opts.min_gain,
            patience=opts.patience,
        )
        sweeps.append(swept)
        for leaves, recall in swept.measured:
            params = {"num_leaves": base.num_leaves, "leaves_to_search": leaves, "reorder": reorder}
            rows.append(make_row("scann", params, recall, grid.measure(at(leaves)), **grid.build))
    return rows, sweeps
