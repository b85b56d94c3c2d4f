"""`PadIterDataset`: pads a finite stream to an exact number of elements.

Eval iterators use it so that every host yields the same number of batches of static shape: rows
past the end of a host's slice are copies of a padding element (valid=False).
"""

from __future__ import annotations

from typing import Any

import grain


class PadIterDataset(grain.IterDataset):
    """Emits the parent's elements followed by copies of `padding`, exactly `length` elements in all."""

    def __init__(self, parent: grain.IterDataset, *, length: int, padding: dict[str, Any]):
        super().__init__(parent)
        self._length = length
        self._padding = padding

    def __iter__(self) -> grain.DatasetIterator:
        return _PadIterator(self._parent.__iter__(), self._length, self._padding)

    def __str__(self) -> str:
        return f"PadIterDataset(length={self._length})"


class _PadIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, length: int, padding: dict[str, Any]):
        super().__init__(parent)
        self._length = length
        self._padding = padding
        self._emitted = 0
        self._parent_done = False

    def __next__(self) -> dict[str, Any]:
        if self._emitted >= self._length:
            raise StopIteration
        element = self._padding
        if not self._parent_done:
            try:
                element = next(self._parent)
            except StopIteration:
                self._parent_done = True
        self._emitted += 1
        if self._emitted == self._length and not self._parent_done:
            self._check_parent_done()
        return element

    def _check_parent_done(self) -> None:
        try:
            next(self._parent)
        except StopIteration:
            self._parent_done = True
            return
        raise RuntimeError(f"The padded stream has more than {self._length} elements.")

    def get_state(self) -> dict[str, Any]:
        return {
            "parent": self._parent.get_state(),
            "emitted": self._emitted,
            "parent_done": self._parent_done,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._emitted = state["emitted"]
        self._parent_done = state["parent_done"]
