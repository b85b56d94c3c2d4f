"""Descriptors streamed to disk as they are computed, so memory stays flat as the archive grows.

Rows are appended to a raw float32 file; `finish` writes the final `.npy` (header + rows) by
copying the raw file in chunks, never holding the whole matrix. Readers memory-map the `.npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COPY_ROWS = 65_536


class DescriptorWriter:
    """Appends float32 rows [n, dim] to `path` (an .npy written at `finish`)."""

    def __init__(self, path: str | Path, dim: int):
        self.path = Path(path)
        self.dim = int(dim)
        self.rows = 0
        self._raw_path = self.path.with_suffix(".raw")
        self._raw = self._raw_path.open("wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"Expected rows of dimension {self.dim}, got shape {rows.shape}.")
        self._raw.write(rows.tobytes())
        self.rows += len(rows)

    def finish(self) -> Path:
        """Writes the .npy and removes the raw file; returns the .npy path."""
        self._raw.close()
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
        header["shape"] = (self.rows, self.dim)
        row_bytes = self.dim * 4
        with self.path.open("wb") as out, self._raw_path.open("rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := raw.read(_COPY_ROWS * row_bytes):
                out.write(chunk)
        self._raw_path.unlink()
        return self.path


def read_descriptors(path: str | Path) -> np.ndarray:
    """Memory-maps an .npy of descriptors (float32 [N, D]); nothing is unpickled."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 2:
        raise ValueError(f"{path}: expected float32 [N, D] descriptors, found {array.dtype} {array.shape}.")
    return array
