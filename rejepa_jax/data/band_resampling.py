"""Bilinear resampling of single-band arrays onto the finest band's grid, and stacking them as [H, W, C].

Archives store each band at its native resolution (Sentinel-2: 10, 20 or 60 m); the coarser bands
are upsampled so that all bands share one grid, whether they come as band files
(`decode.decode_band_files`) or as tfds band features (`stack_bands`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from rejepa_jax.data.errors import BadImageError


def resize_bilinear(band: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a 2-D band to `shape` (height, width), meant for upsampling: float32.

    Pixel centres are aligned, not corners (align_corners=False, "half-pixel centres"): output pixel
    i samples the input at x = (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1] (edge pixels
    repeat), from its two neighbours floor(x) and floor(x) + 1 weighted by distance. A 60 x 60 band
    on a 120 x 120 grid thus weighs its pixels 3/4 and 1/4 along each axis. Aligning centres keeps
    the grids registered as on the ground: a 20 m pixel's centre is the centre of the 2 x 2 block of
    10 m pixels it covers (aligned corners would shift coarse bands by up to half a fine pixel).
    This is the convention of torch's `interpolate(mode="bilinear", align_corners=False)`, and what
    PIL's BILINEAR resize gives when upsampling (a test checks PIL against it); computed in float64
    as two small matrix products, so it is exact up to float32 rounding.
    """
    band = np.asarray(band, dtype=np.float64)
    rows = _bilinear_weights(band.shape[0], int(shape[0]))
    cols = _bilinear_weights(band.shape[1], int(shape[1]))
    return (rows @ band @ cols.T).astype(np.float32)


@functools.cache
def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """The [n_out, n_in] matrix of `resize_bilinear` along one axis (rows sum to 1), built once per size
    pair (every patch resamples the same few sizes) and read-only, as it is shared."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    weight = x - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(n_out), high), weight)
    matrix.flags.writeable = False
    return matrix


def stack_bands(bands: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Stacks single-band 2-D arrays into float32 [H, W, C] on the finest band's grid.

    Catalog datasets such as BigEarthNet store each Sentinel-2 band as its own feature at its
    native resolution (10, 20 or 60 m); coarser bands are upsampled to the finest one with
    `resize_bilinear`, as band files are (`decode_band_files`).
    """
    arrays = [np.asarray(band, dtype=np.float32) for band in bands]
    if any(a.ndim != 2 or 0 in a.shape for a in arrays):
        raise BadImageError(f"Cannot stack {name}: every band must be a non-empty 2-D array.")
    grid = (max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays))
    return np.stack([a if a.shape == grid else resize_bilinear(a, grid) for a in arrays], axis=-1)
