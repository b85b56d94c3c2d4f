"""One grid row: a search-effort parameter swept upwards until more effort cannot help."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.search_peers.common import log


@dataclasses.dataclass
class Sweep:
    """One grid row: `param` swept over `candidates` with the `fixed` parameters; what was measured."""

    method: str
    fixed: dict[str, Any]
    param: str
    candidates: list[int]
    measured: list[tuple[int, float]]  # (value, recall), ascending.
    stop: str  # "reached" the highest target, recall went "flat", or the candidates were "exhausted".

    def summary(self) -> str:
        fixed = ", ".join(f"{k} {v}" for k, v in self.fixed.items())
        points = ", ".join(f"{v}:{r:.3f}" for v, r in self.measured)
        return f"{self.method} [{fixed}] {self.param} {points} ({self.stop})"


def sweep(
    method: str,
    fixed: dict[str, Any],
    param: str,
    values: Sequence[int],
    recall_of: Callable[[int], float],
    *,
    stop_at: float,
    min_gain: float,
    patience: int,
) -> Sweep:
    """Recall at ascending effort values, stopping early where more effort cannot help.

    Stops after the first value whose recall reaches `stop_at` (the highest target: larger values only
    cost more) or once `patience` consecutive steps each gained less than `min_gain` (recall has hit the
    ceiling set by the other parameter, e.g. the re-ranking depth).
    """
    candidates = sorted(set(values))
    measured: list[tuple[int, float]] = []
    flat_steps = 0
    stop = "exhausted"
    for value in candidates:
        recall = recall_of(value)
        if measured:
            flat_steps = flat_steps + 1 if recall - measured[-1][1] < min_gain else 0
        measured.append((value, recall))
        if recall >= stop_at:
            stop = "reached"
            break
        if flat_steps >= patience:
            stop = "flat"
            break
    result = Sweep(method, fixed, param, candidates, measured, stop)
    log(f"  {result.summary()}")
    return result
