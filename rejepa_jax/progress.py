"""The train loop's console line: step/total, loss terms, learning rate, images/s and ETA (tqdm).

The bar only moves at log steps, so the step time is never synchronised just to draw it; the ETA is
tqdm's, from the average rate since this process started (smoothing off), which stays steady across
the sparse updates and ignores the steps done before a resume.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping

from tqdm.auto import tqdm

_BAR_FORMAT = "step {n_fmt}/{total_fmt} {percentage:3.0f}% |{bar:20}| {desc} [{elapsed}<{remaining}]"


def format_scalars(scalars: Mapping[str, float]) -> str:
    """`name value` pairs with 4 significant digits: readable for losses and learning rates alike."""
    return "  ".join(f"{name} {float(value):.4g}" for name, value in scalars.items())


class TrainProgress:
    """One tqdm line for the train loop; with `enabled=False` (processes other than 0) it prints nothing."""

    def __init__(self, total_steps: int, initial_step: int = 0, enabled: bool = True) -> None:
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            disable=not enabled,
            bar_format=_BAR_FORMAT,
            smoothing=0.0,
            dynamic_ncols=True,
        )

    def update(self, step: int, scalars: Mapping[str, float], images_per_second: float) -> None:
        """Moves the bar to `step` and shows the scalars (loss terms, `lr`, ...) and the throughput."""
        self._bar.set_description_str(
            f"{format_scalars(scalars)}  img/s {images_per_second:.1f}", refresh=False
        )
        self._bar.update(step - self._bar.n)

    @contextlib.contextmanager
    def cleared(self) -> Iterator[None]:
        """Clears the bar while the block writes to the console (a log line), then redraws it.

        Logging inside the block prints the line once, above the bar, instead of through its middle.
        """
        if self._bar.disable:
            yield
            return
        with self._bar.external_write_mode(file=sys.stderr):
            yield

    def close(self) -> None:
        self._bar.close()


class Throughput:
    """Images per second between consecutive log steps, from the wall clock.

    The first call only starts the clock and returns 0. Everything between two calls counts, so an
    evaluation run between log steps lowers the next reading.
    """

    def __init__(self, batch_size: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.batch_size = batch_size
        self._clock = clock
        self._last: tuple[int, float] | None = None

    def update(self, step: int) -> float:
        now = self._clock()
        last, self._last = self._last, (step, now)
        if last is None or now <= last[1]:
            return 0.0
        return (step - last[0]) * self.batch_size / (now - last[1])
