"""Descriptor whitening learned on the archive, fitted from streamed statistics (bounded memory).

L2-normalised descriptors -> subtract the archive mean -> project -> L2-normalise again, where the
projection is either PCA-whitening (the top `dim` principal axes, each divided by the square root
of its variance) or per-dimension standardisation (each dimension divided by its std; no rotation,
no dimension dropped). Both remove the dominant shared directions that make all cosine similarities
of an early-trained encoder close to 1; standardisation is the one chosen on the EuroSAT tuning
protocol (benchmarks/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rejepa_jax.retrieval.exact_search import l2_normalise

EIGENVALUE_FLOOR = 1e-9


class CovarianceAccumulator:
    """Running sum and outer-product sum in float64, one batch at a time."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64)
        self.count += len(rows)
        self.total += rows.sum(axis=0)
        self.outer += rows.T @ rows


@dataclasses.dataclass(frozen=True)
class PcaWhitening:
    """mean [D], projection [D, d] already divided by sqrt(eigenvalue)."""

    mean: np.ndarray
    projection: np.ndarray

    @property
    def output_dim(self) -> int:
        return self.projection.shape[1]

    @classmethod
    def fit(cls, stats: CovarianceAccumulator, dim: int) -> PcaWhitening:
        if not 0 < dim <= len(stats.total):
            raise ValueError(f"PCA dimension must be in 1..{len(stats.total)}, got {dim}.")
        if stats.count < 2:
            raise ValueError("PCA-whitening needs at least two descriptors.")
        mean = stats.total / stats.count
        cov = stats.outer / stats.count - np.outer(mean, mean)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        top = np.argsort(eigenvalues)[::-1][:dim]
        scale = 1.0 / np.sqrt(np.maximum(eigenvalues[top], EIGENVALUE_FLOOR))
        # Fix each axis's sign so the same data always gives the same projection.
        vectors = eigenvectors[:, top]
        vectors *= np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)])
        return cls(mean=mean.astype(np.float32), projection=(vectors * scale).astype(np.float32))

    @classmethod
    def fit_standardisation(cls, stats: CovarianceAccumulator) -> PcaWhitening:
        """Per-dimension standardisation: the diagonal case (projection = diag(1 / std))."""
        if stats.count < 2:
            raise ValueError("Standardisation needs at least two descriptors.")
        mean = stats.total / stats.count
        var = np.diag(stats.outer) / stats.count - mean**2
        scale = 1.0 / np.sqrt(np.maximum(var, EIGENVALUE_FLOOR))
        return cls(mean=mean.astype(np.float32), projection=np.diag(scale).astype(np.float32))

    @classmethod
    def fit_to(cls, descriptors: np.ndarray, *, standardise: bool = True, dim: int = 0) -> PcaWhitening:
        """Fits on L2-normalised rows held in memory (evaluation splits)."""
        stats = CovarianceAccumulator(descriptors.shape[1])
        stats.add(descriptors)
        return cls.fit_standardisation(stats) if standardise else cls.fit(stats, dim)

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        """L2-normalised input rows -> whitened, L2-normalised rows [n, d]."""
        return l2_normalise((np.asarray(descriptors, np.float32) - self.mean) @ self.projection)

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> PcaWhitening:
        """From a file path or an open binary file (e.g. checked in-memory bytes)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(mean=data["mean"], projection=data["projection"])
