"""Numpy image augmentations for [H, W, C] arrays of any band count and dtype; outputs are float32.

Resizing runs per band through PIL's 32-bit float mode ("F"), so 2-band SAR and 13-band
multispectral images are resized exactly like RGB, without clipping or rounding to 8 bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

# torchvision's RandomResizedCrop: tries before the centre-crop fallback.
_CROP_ATTEMPTS = 10


def random_resized_crop(
    image: np.ndarray,
    size: int | tuple[int, int],
    scale: Sequence[float],
    ratio: Sequence[float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Crops a random area fraction `scale` with aspect ratio (w/h) `ratio` and resizes it to `size`.

    Follows torchvision's algorithm: up to 10 draws of (area, log-uniform ratio), the first that fits
    is used; otherwise a centre crop clamped to the ratio range.
    """
    top, left, height, width = _crop_box(image.shape[0], image.shape[1], scale, ratio, rng)
    return _resize_box(image, size, (left, top, left + width, top + height))


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes the whole image to `size` with bilinear interpolation (the evaluation transform)."""
    return _resize_box(image, size, (0, 0, image.shape[1], image.shape[0]))


def random_flips(image: np.ndarray, horizontal: bool, vertical: bool, rng: np.random.Generator) -> np.ndarray:
    """Flips left-right and/or up-down, each with probability 1/2 when enabled.

    Both coins are always drawn, so enabling one flip does not shift the random stream of what
    follows (the masks).
    """
    flip_h, flip_v = rng.random(2) < 0.5
    if horizontal and flip_h:
        image = image[:, ::-1]
    if vertical and flip_v:
        image = image[::-1]
    return np.ascontiguousarray(image, dtype=np.float32)


def random_rotate90(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotates a square image by a uniformly drawn multiple of 90 degrees (with flips: the 8 symmetries
    of the square, under which an overhead scene keeps its meaning)."""
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"random_rotate90 needs a square image, got {image.shape[0]}x{image.shape[1]}.")
    return np.ascontiguousarray(np.rot90(image, k=int(rng.integers(4)), axes=(0, 1)))


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Returns (image - mean) / std per band, in the image's raw units."""
    bands = image.shape[-1]
    if len(mean) != bands or len(std) != bands:
        raise ValueError(
            f"data.mean has {len(mean)} and data.std has {len(std)} values, but the images have {bands} "
            "band(s); give one value per band (`python -m rejepa_jax.stats` prints them)."
        )
    std_array = np.asarray(std, dtype=np.float32)
    if np.any(std_array <= 0):
        raise ValueError(f"data.std must be positive for every band, got {tuple(std)}.")
    return (image.astype(np.float32) - np.asarray(mean, dtype=np.float32)) / std_array


def _crop_box(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's RandomResizedCrop.get_params."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(_CROP_ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resize_box(
    image: np.ndarray, size: int | tuple[int, int], box: tuple[float, float, float, float]
) -> np.ndarray:
    """Resizes the (left, top, right, bottom) box of every band to `size` (h, w) with PIL bilinear."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    bands = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[:, :, b], dtype=np.float32)).resize(
                (out_w, out_h), Image.Resampling.BILINEAR, box=box
            )
        )
        for b in range(image.shape[-1])
    ]
    return np.stack(bands, axis=-1)
