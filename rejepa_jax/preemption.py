"""Stop cleanly on SIGTERM: finish the current step, checkpoint, exit 0; the next run resumes.

On one process a SIGTERM handler sets a flag that the loop reads after each step. On many
processes JAX's preemption service (started by `jax.distributed.initialize`) already listens for
the signal and agrees on one step at which every host stops, so that all of them save the same
step; `reached_preemption_sync_point` is a cheap local check, not a collective.
"""

from __future__ import annotations

import signal
import types

import jax
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """`should_stop(step)` turns True once a SIGTERM arrived (on every host at the same step)."""

    def __init__(self) -> None:
        self._requested = False
        self._multi_process = jax.process_count() > 1
        self._previous_handler = None
        if not self._multi_process:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        if not self._requested:
            logging.warning("SIGTERM received: finishing the current step, then saving a checkpoint.")
        self._requested = True

    def should_stop(self, step: int) -> bool:
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def close(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
