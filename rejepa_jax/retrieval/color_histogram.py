"""The colour-histogram retrieval floor: a hand-made descriptor a learned one has to beat.

On the EuroSAT protocol (archive = train + validation, queries = test) the square-rooted 8×8×8 RGB
histogram with exact cosine search reaches mAP@20 ≈ 0.767 (normalised by R_K) and P@20 ≈ 0.685, far
above chance (0.102); a learned descriptor below that has learned nothing colour alone does not give.
`benchmarks/color_histogram_floor.py` reproduces the numbers. It lives in retrieval because the
descriptor is computed while embedding a split (`embedding.py`), below evaluation.

Binning raw values over one range only suits bands that share a scale (8-bit RGB). Multispectral bands
differ by orders of magnitude (EuroSAT-MS: cirrus B10 ~ 12, B8A ~ 2,600 in reflectance x 10,000), so
`eval.histogram_space = "standardised"` bins each band's z-score under the config's `data.mean/std`
(the values the model sees) over one fixed range, `eval.histogram_zrange`, instead: every band
spreads over the same bins whatever its scale, and the floor stays meaningful for any band count
(per-band marginals concatenated; three bands still binned jointly, which on the EuroSAT-MS tuning
split gave P@20 0.322 for B04, B03, B02 against 0.289 for their marginals).
"""

from __future__ import annotations

from typing import Any

import numpy as np

HISTOGRAM_SPACES = ("raw", "standardised")


def _bin_index(values: np.ndarray, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    """Uniform bins over [lo, hi] like `np.histogram` (the last bin includes hi); values outside the
    range go to the first or last bin instead of being dropped, so every pixel is counted once."""
    lo, hi = value_range
    scaled = (values.astype(np.float64) - lo) * (bins / (hi - lo))
    return np.clip(np.floor(scaled), 0, bins - 1).astype(np.int64)


def color_histogram(
    images: np.ndarray, *, bins: int = 8, value_range: tuple[float, float] = (0.0, 255.0)
) -> np.ndarray:
    """L2-normalised square-rooted histograms of images [N, H, W, C] in raw units → float32 [N, D].

    - C = 3: the joint colour histogram, D = bins³, bin index (b0·bins + b1)·bins + b2 over bands 0, 1, 2.
    - any other C: the per-band marginal histograms concatenated band by band, D = C·bins (a joint
      histogram of many bands would be far too sparse to compare).

    The square root (Hellinger mapping) damps the dominant bins so that cosine similarity compares the
    whole colour distribution instead of one majority colour; the L2 normalisation makes the
    descriptor independent of the image size.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Need images [N, H, W, C]: got shape {images.shape}.")
    if bins < 1 or not value_range[1] > value_range[0]:
        raise ValueError(f"Need bins >= 1 and an increasing value range: got {bins}, {value_range}.")
    n, height, width, channels = images.shape
    idx = _bin_index(images.reshape(n, height * width, channels), bins, value_range)
    if channels == 3:
        dim = bins**3
        flat = (idx[..., 0] * bins + idx[..., 1]) * bins + idx[..., 2]
    else:
        dim = channels * bins
        flat = idx + np.arange(channels) * bins  # Offsets band c into its own block of bins.
    flat = flat.reshape(n, -1) + (np.arange(n) * dim)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * dim).reshape(n, dim)
    desc = np.sqrt(counts.astype(np.float64))
    norms = np.linalg.norm(desc, axis=1, keepdims=True)
    return (desc / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def histogram_descriptor(normalised: np.ndarray, data_config: Any, eval_config: Any) -> np.ndarray:
    """The colour-histogram baseline of a batch of model inputs (standardised images [N, H, W, C]).

    `eval_config.histogram_space` chooses what is binned, `histogram_bins` bins per band:
    - "raw" undoes the standardisation and bins raw pixel values over `histogram_range` (the EuroSAT
      RGB floor, unchanged);
    - "standardised" bins the inputs as they are, z-scores under `data.mean/std`, over
      `histogram_zrange`.
    """
    space = eval_config.get("histogram_space", "raw")
    bins = int(eval_config.get("histogram_bins", 8))
    if space == "raw":
        raw = normalised * np.asarray(data_config.std, np.float32) + np.asarray(data_config.mean, np.float32)
        return color_histogram(raw, bins=bins, value_range=tuple(eval_config.histogram_range))
    if space == "standardised":
        zrange = tuple(eval_config.get("histogram_zrange", (-3.0, 3.0)))
        return color_histogram(normalised, bins=bins, value_range=zrange)
    raise ValueError(f"Unknown eval.histogram_space {space!r}; choose one of {HISTOGRAM_SPACES}.")
