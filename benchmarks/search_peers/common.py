"""What every search runner shares: the run's options, the result row and progress logging."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line's knobs that runners read; `dataclasses.asdict` goes into the JSON report."""

    k: int
    targets: tuple[float, ...]
    repeats: int
    single_queries: int
    exact_search_single_queries: int
    threads: int
    seed: int
    num_leaves: int  # 0: round(sqrt(N)), the tree autotune builds.
    training_sample: int
    brute_force_below: int
    reorder_multiples: tuple[int, ...]
    k_factors: tuple[int, ...]
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef: tuple[int, ...]
    pq_dims_per_code: int
    faiss_by_residual: bool
    min_gain: float
    patience: int


def make_row(
    method: str, params: dict[str, Any], recall: float, timing: dict[str, float], **extra: Any
) -> Row:
    """One measured setting; `extra` carries build_s, bytes_per_vector and method-specific fields."""
    return {"method": method, "params": params, "recall": recall, **timing, **extra}


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
