"""ScaNN auto-tune (what `export` runs) at every target, timed on the grid's own index beside the grid."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from benchmarks.search_datasets import Dataset
from benchmarks.search_peers.common import Options, Row, log, make_row
from benchmarks.search_peers.scann_grid import GridIndex, grid_index, run_grid
from benchmarks.search_peers.sweep import Sweep
from rejepa_jax.retrieval import scann_index
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.index_autotune import autotune
from rejepa_jax.retrieval.index_speed import measure_speed
from rejepa_jax.retrieval.scann_index import IndexSettings


@dataclasses.dataclass(frozen=True)
class Tuned:
    """One autotune call: its target, pick, own recall estimate, table length and duration."""

    target: float
    settings: IndexSettings
    tuned_recall: float
    settings_tried: int
    autotune_s: float


def tune(ds: Dataset, opts: Options) -> list[Tuned]:
    """`autotune` at each target, as export would call it on this database."""
    tuned = []
    for target in opts.targets:
        start = time.perf_counter()
        settings, recall, table = autotune(
            ds.db, target_recall=target, k=opts.k, seed=opts.seed, brute_force_below=opts.brute_force_below
        )
        tuned.append(Tuned(target, settings, recall, len(table), time.perf_counter() - start))
        log(f"scann autotune {target}: {settings} ({len(table)} settings, {tuned[-1].autotune_s:.1f} s)")
    return tuned


def tuned_row(tuned: Tuned, grid: GridIndex) -> Row:
    """The autotuned setting timed on the grid index, or on its own build (brute force, another tree)."""
    settings, opts = tuned.settings, grid.opts
    extra = {
        "target": tuned.target,
        "tuned_recall": tuned.tuned_recall,
        "settings_tried": tuned.settings_tried,
        "autotune_s": tuned.autotune_s,
        "settings": dataclasses.asdict(settings),
    }
    params = {"kind": settings.kind}
    if settings.kind == "tree_ah":
        params |= {"num_leaves": settings.num_leaves, "leaves_to_search": settings.leaves_to_search}
        params["reorder"] = settings.reorder
    if grid.builds(settings):
        return make_row(
            "scann_autotune", params, grid.recall(settings), grid.measure(settings), **grid.build, **extra
        )
    start = time.perf_counter()
    own = scann_index.build_searcher(grid.ds.db, settings, num_neighbors=opts.k)
    build_s = time.perf_counter() - start
    own.set_num_threads(opts.threads)
    indices, _ = scann_index.search(own, grid.ds.queries, opts.k, settings)
    timing = measure_speed(
        own, grid.ds.queries, opts.k, settings, repeats=opts.repeats, single_queries=opts.single_queries
    )
    recall = recall_vs_exact_at_k(indices, grid.exact, opts.k)
    return make_row(
        "scann_autotune", params, recall, timing, build_s=build_s, build_label=settings.kind, **extra
    )


def run_scann(ds: Dataset, exact: np.ndarray, opts: Options) -> tuple[list[Row], list[Sweep]]:
    """Autotune at each target, then the grid, then each autotuned setting timed like a grid point."""
    tuned = tune(ds, opts)
    with grid_index(ds, exact, opts) as grid:
        rows, sweeps = run_grid(grid)
        rows += [tuned_row(t, grid) for t in tuned]
    return rows, sweeps
