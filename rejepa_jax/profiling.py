"""A `jax.profiler` trace of a few training steps, written where TensorBoard's profile plugin reads it.

`profile.steps` names the steps: `(first, last)`, both included, numbered as in `metrics.jsonl`
(1 to `total_steps`); `(n,)` traces step n alone; `()` traces nothing. `jax.profiler.start_trace`
writes `<logdir>/plugins/profile/<timestamp>/<host>.xplane.pb`, the layout the plugin (and xprof)
expects, so `tensorboard --logdir <workdir>/tensorboard` shows it beside the scalars.

The trainer calls `StepProfiler.step` around each step and `StepProfiler.step_done` after it. Neither
touches the device except once, when stopping: the last traced step must have finished, or its device
work would be cut out of the trace. Only process 0 traces (the others' hosts look the same).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from absl import logging

STEP_NAME = "train"  # The StepTraceAnnotation name: TensorBoard's step-time views group by it.


def parse_steps(steps: Sequence[Any], total_steps: int) -> tuple[int, int] | None:
    """`profile.steps` as (first, last), both included, or None when empty; a ValueError otherwise."""
    steps = tuple(steps)
    if not steps:
        return None
    usage = (
        f"profile.steps={steps!r} is invalid: give (first, last) step numbers, both included, with "
        f"1 <= first <= last <= total_steps={total_steps} (e.g. --config.profile.steps=10,12), a "
        "single step (n,), or () for no trace."
    )
    if len(steps) > 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ValueError(usage)
    first, last = steps[0], steps[-1]
    if not 1 <= first <= last <= total_steps:
        raise ValueError(usage)
    return first, last


class StepProfiler:
    """Starts a trace before the first profiled step and stops it after the last one.

    A resumed run that starts past `first` traces the steps of the range it still runs; one that
    starts past `last` traces nothing.
    """

    def __init__(self, steps: Sequence[Any], total_steps: int, logdir: str | Path, *, enabled: bool) -> None:
        self.window = parse_steps(steps, total_steps)  # Validates on every process.
        self.logdir = Path(logdir)
        self.enabled = enabled and self.window is not None
        self.active = False

    def step(self, step: int) -> contextlib.AbstractContextManager[Any]:
        """Context for step `step`'s work: starts the trace if due, then annotates the step in it."""
        if not self.enabled:
            return contextlib.nullcontext()
        first, last = self.window
        if not self.active and first <= step <= last:
            self.logdir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(self.logdir)
            self.active = True
            logging.info("Profiling steps %d to %d into %s.", step, last, self.logdir)
        if not self.active:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation(STEP_NAME, step_num=step)

    def step_done(self, step: int, outputs: Any) -> None:
        """After step `step`: at the last profiled step, waits for `outputs` and writes the trace."""
        if self.active and step >= self.window[1]:
            jax.block_until_ready(outputs)  # The profiled steps' device work must be in the trace.
            self._stop()

    def close(self) -> None:
        """Writes a trace still open (the loop stopped early: preemption, an error); safe to repeat."""
        if self.active:
            try:
                self._stop()
            except Exception:  # Must not hide the error that stopped the loop.
                logging.exception("Could not write the profiler trace to %s.", self.logdir)

    def _stop(self) -> None:
        self.active = False
        jax.profiler.stop_trace()
        logging.info("Wrote the profiler trace to %s.", self.logdir / "plugins" / "profile")
