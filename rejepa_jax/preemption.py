"""Stop cleanly on SIGTERM: finish the current step, checkpoint, exit 0; the next run resumes.

Every process installs a SIGTERM handler that only sets a flag. On one process the loop reads the
flag after each step. On many processes they must all stop after the same step, so every
`check_every` steps they agree through one tiny all-gather of their flags (a host sync, which is
why it is not done every step); the first process to see the signal stops them all.
"""

from __future__ import annotations

import signal
import types

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """`should_stop(step)` turns True, on every process at the same step, after a SIGTERM."""

    def __init__(self, check_every: int = 10) -> None:
        self._requested = False
        self._check_every = max(int(check_every), 1)
        self._multi_process = jax.process_count() > 1
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        if not self._requested:
            logging.warning("SIGTERM received: finishing the current step, then saving a checkpoint.")
        self._requested = True

    def should_stop(self, step: int) -> bool:
        if not self._multi_process:
            return self._requested
        if step % self._check_every:
            return False
        flags = multihost_utils.process_allgather(np.int32(self._requested))
        return bool(np.any(flags))

    def close(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
