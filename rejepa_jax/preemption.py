"""Stop cleanly on SIGTERM: finish the current step, checkpoint, exit 0; the next run resumes.

The SIGTERM handler only sets a flag. `rejepa_jax.main` installs it first thing (`install`), before
JAX starts, and the trainer installs it (if not yet there) before building anything, so a SIGTERM
during start-up never kills the process: the trainer checks the flag before and after restoring
the checkpoint and, if set, returns without training or saving.

On one process the loop reads the flag after each step. On many processes they must all stop after
the same step, so every `check_every` steps they agree through one tiny all-gather of their flags (a
host sync, which is why it is not done every step); the first process to see the signal stops them
all. At start-up they agree at each check.
"""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

import numpy as np
from absl import logging

_requested = threading.Event()
_installed = False


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    del signum, frame
    if not _requested.is_set():
        logging.warning(
            "SIGTERM received: stopping at the next safe point (after the current step, with a "
            "checkpoint; during start-up, before training and without saving)."
        )
    _requested.set()


def install() -> Any:
    """Installs the flag-setting SIGTERM handler; returns the previous handler (None if already in)."""
    global _installed
    if _installed:
        return None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True
    return previous


def uninstall(previous: Any = signal.SIG_DFL) -> None:
    """Puts `previous` (default: the system's action, which ends the process) back; clears the flag."""
    global _installed
    signal.signal(signal.SIGTERM, previous)
    _installed = False
    _requested.clear()


def requested() -> bool:
    """Whether this process has received SIGTERM since the handler was installed."""
    return _requested.is_set()


class PreemptionWatcher:
    """`should_stop(step)` turns True, on every process at the same step, after a SIGTERM.

    Installs the handler unless it is already installed (then `close` leaves it in place).
    """

    def __init__(self, check_every: int = 10) -> None:
        self._check_every = max(int(check_every), 1)
        self._previous_handler = install()
        self._owns_handler = self._previous_handler is not None

    def stop_requested_now(self) -> bool:
        """True on every process if any process has received SIGTERM (a host sync on many processes)."""
        import jax  # Imported late: main installs the handler before JAX loads.

        if jax.process_count() == 1:
            return requested()
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.int32(requested()))))

    def should_stop(self, step: int) -> bool:
        import jax

        if jax.process_count() == 1:
            return requested()
        if step % self._check_every:
            return False
        return self.stop_requested_now()

    def close(self) -> None:
        if self._owns_handler:
            uninstall(self._previous_handler)
            self._owns_handler = False
