"""Representation-collapse monitors for pooled embeddings.

The JEPA pretext loss can fall towards 0 exactly when the representation collapses, because constant
targets are easy to predict; these two numbers see the collapse directly:
- the per-dimension standard deviation across examples (0 for a constant embedding), and
- the effective rank (RankMe; Garrido et al., ICML 2023), which falls when the embeddings span only a
  few directions even though each dimension still varies (dimensional collapse).
During training, `CollapseAlarm` watches the first of them on each logged batch.
"""

from __future__ import annotations

import numpy as np

# RankMe adds this to the normalised singular values so that the entropy of exact zeros is finite.
_RANKME_EPS = 1e-7


def _as_matrix(z: np.ndarray) -> np.ndarray:
    """[..., D] embeddings as a float64 [N, D] matrix (leading axes are examples)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim < 2:
        raise ValueError(f"Need embeddings [N, D]: got shape {z.shape}.")
    return z.reshape(-1, z.shape[-1])


def embedding_std(z: np.ndarray) -> dict[str, float]:
    """`std_mean` and `std_min` of the per-dimension std of z [N, D] across the N examples.

    Population std (ddof 0) of the raw features, no normalisation: after a final LayerNorm a healthy
    encoder sits around 0.5 or more, and a value near 0 means the dimension is constant (collapsed).
    """
    std = _as_matrix(z).std(axis=0)
    return {"std_mean": float(std.mean()), "std_min": float(std.min())}


def effective_rank(z: np.ndarray, *, center: bool = False) -> float:
    """RankMe effective rank of z [N, D]: exp(−Σ p_k log p_k) with p_k = σ_k / Σσ + 1e-7.

    As in RankMe, z is *not* centred by default: the singular values are those of the raw embedding
    matrix, so a constant non-zero embedding has rank 1. With `center=True` the mean embedding is
    removed first (the spectrum of the covariance), and a constant embedding has rank 0. The value lies
    between 1 and min(N, D) (0 only for an all-zero matrix) and equals r for r equal singular values.
    """
    z = _as_matrix(z)
    # Singular values below rounding level are zeros: centring a constant embedding leaves ~1e-16 noise
    # that would otherwise be normalised into a spectrum of its own. Tolerance as in
    # `np.linalg.matrix_rank`, scaled by the uncentred matrix.
    tol = np.linalg.norm(z) * max(z.shape) * np.finfo(z.dtype).eps
    if center:
        z = z - z.mean(axis=0, keepdims=True)
    sigma = np.linalg.svd(z, compute_uv=False)
    sigma = np.where(sigma > tol, sigma, 0.0)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total + _RANKME_EPS
    return float(np.exp(-(p * np.log(p)).sum()))


class CollapseAlarm:
    """Warns when the batch std of the pooled context embedding (`train/context_std`) falls too low.

    A collapsing run keeps a finite, often falling, loss (MAE regressing the mean patch, a JEPA
    predicting a constant), so the non-finite check never fires; a random-init ViT already gives about
    0.3 here and a collapsed one under 0.1 (benchmarks/BENCHMARKS.md, "MAE's initialisation and
    stability"). One warning per fall below the threshold, not one per log step.
    """

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ValueError(f"collapse_warning_std must be >= 0 (0 disables the warning): got {threshold}.")
        self.threshold = threshold
        self._below = False

    def check(self, step: int, context_std: float | None) -> str | None:
        """The warning to give at `step`, or None: only when the std has just crossed below the threshold."""
        if not self.threshold or context_std is None:
            return None
        below = context_std < self.threshold
        fell, self._below = below and not self._below, below
        if not fell:
            return None
        return (
            f"Step {step}: train/context_std {context_std:.3g} is below "
            f"collapse_warning_std={self.threshold:g}. "
            "The encoder's pooled output barely varies across the batch: the representation is collapsing. "
            "Lower optimizer.lr, or try optimizer.b2=0.95; collapse_warning_std=0 silences this warning."
        )
