"""Synthetic clustered unit vectors: descriptor-like data of any size for the search benchmarks."""

from __future__ import annotations

import math

import numpy as np


def clustered_unit_vectors(n: int, d: int, num_clusters: int, seed: int, noise: float) -> np.ndarray:
    """[n, d] float32 unit rows: a random unit centre (one of `num_clusters`) plus noise, renormalised.

    `noise` is the expected norm of the perturbation relative to the unit centre. The centres depend on
    `seed` only, so the first rows of `clustered_unit_vectors(n + q, ...)` are a database and the rest
    fresh queries from the same distribution.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_clusters, size=n)
    x = centres[labels] + rng.standard_normal((n, d), dtype=np.float32) * np.float32(noise / math.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)
