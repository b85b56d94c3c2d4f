"""Small image folders and configs for the data tests, written into a test's tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from rejepa_jax import config_lib


def write_png(path: Path, array: np.ndarray) -> Path:
    """Writes a uint8 [H, W] or [H, W, 3|4] array losslessly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def write_corrupt_jpeg(path: Path, seed: int = 0) -> Path:
    """Writes a JPEG cut off half-way, as an interrupted copy leaves it."""
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(seed, 16)).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def random_rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def class_folder(root: Path, counts: dict[str, int], size: int = 16) -> dict[str, np.ndarray]:
    """Writes `counts[name]` RGB PNGs per class folder; returns {relative path: pixels}."""
    written = {}
    for c, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            rel = f"{name}/{name}_{i:03d}.png"
            written[rel] = random_rgb(1000 * c + i, size)
            write_png(root / rel, written[rel])
    return written


def folder_with_corrupt_files(
    root: Path, total: int, bad_indices: tuple[int, ...], size: int = 16
) -> list[str]:
    """`total` images in name order, truncated JPEGs at `bad_indices`; returns the bad names."""
    bad = []
    for i in range(total):
        if i in bad_indices:
            bad.append(write_corrupt_jpeg(root / f"img_{i:03d}.jpg", seed=i).name)
        else:
            write_png(root / f"img_{i:03d}.png", random_rgb(i, size))
    return bad


def small_config(root: Path | str = config_lib.SAMPLE_ROOT, **data_overrides) -> ml_collections.ConfigDict:
    """A config for 16x16 crops on a 4x4 patch grid with 4-image batches, over `root`."""
    config = config_lib.base_config()
    config.batch_size = 4
    config.data.root = str(root)
    config.data.image_size = 16
    config.data.num_threads = 2
    config.data.num_workers = 0
    config.data.mean = (127.5, 127.5, 127.5)
    config.data.std = (64.0, 64.0, 64.0)
    for key, value in data_overrides.items():
        config.data[key] = value
    return config


PATCH_GRID = (4, 4)  # image_size 16 with 4-pixel patches.
