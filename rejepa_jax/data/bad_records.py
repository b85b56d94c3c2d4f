"""How a record that fails to decode travels down the pipeline, and the stage that drops and counts it.

The per-record maps (`record_transforms`) catch a `DataError` and return a marker (`bad_record`)
instead of an example. `SkipBadIterDataset`, after the worker processes, drops the markers when
`data.skip_bad` is set, counting them in the next element's `skipped`, or raises their error.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from rejepa_jax.data.errors import BadImageError, BandCountError, DataError, ImageTooLargeError

# A record that failed to decode travels down the pipeline as {_ERROR_KEY: message, _ERROR_TYPE_KEY:
# class name}, so that it reaches `SkipBadIterDataset` in order, also from worker processes.
_ERROR_KEY = "data_error"
_ERROR_TYPE_KEY = "data_error_type"
_ERROR_TYPES = {cls.__name__: cls for cls in (DataError, BadImageError, BandCountError, ImageTooLargeError)}


def bad_record(error: DataError) -> dict[str, str]:
    return {_ERROR_KEY: str(error), _ERROR_TYPE_KEY: type(error).__name__}


class SkipBadIterDataset(grain.IterDataset):
    """Drops bad-record markers (or raises their error) and adds `skipped` to every element.

    `skipped` counts the bad records dropped since the previous element, so the counts over a run
    sum to exactly the number of bad records read. On a finite stream, bad records after the last
    element are reported on one extra `end_element` (when given). Its state is the parent's: every
    bad record before an element is consumed together with that element.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        skip_bad: bool,
        max_consecutive: int,
        end_element: dict[str, Any] | None = None,
    ):
        super().__init__(parent)
        self._skip_bad = skip_bad
        self._max_consecutive = max_consecutive
        self._end_element = end_element

    def __iter__(self) -> grain.DatasetIterator:
        return _SkipBadIterator(
            self._parent.__iter__(), self._skip_bad, self._max_consecutive, self._end_element
        )

    def __str__(self) -> str:
        return f"SkipBadIterDataset(skip_bad={self._skip_bad})"


class _SkipBadIterator(grain.DatasetIterator):
    def __init__(
        self,
        parent: grain.DatasetIterator,
        skip_bad: bool,
        max_consecutive: int,
        end_element: dict[str, Any] | None,
    ):
        super().__init__(parent)
        self._skip_bad = skip_bad
        self._max_consecutive = max_consecutive
        self._end_element = end_element

    def __next__(self) -> dict[str, Any]:
        skipped = 0
        while True:
            try:
                element = next(self._parent)
            except StopIteration:
                if skipped and self._end_element is not None:
                    return {**self._end_element, "skipped": np.int32(skipped)}
                raise
            if _ERROR_KEY not in element:
                return {**element, "skipped": np.int32(skipped)}
            if not self._skip_bad:
                raise _ERROR_TYPES.get(element[_ERROR_TYPE_KEY], DataError)(
                    f"{element[_ERROR_KEY]} (set data.skip_bad=True to skip and count bad records)"
                )
            skipped += 1
            if skipped >= self._max_consecutive:
                raise DataError(
                    f"{skipped} records in a row failed to decode; the data has no usable example. "
                    f"Last error: {element[_ERROR_KEY]}"
                )

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)
