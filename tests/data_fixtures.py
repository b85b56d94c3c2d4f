"""Small image folders and configs for the data tests, written into a test's tmp_path."""

from __future__ import annotations

import io
import struct
import zlib
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


def png16_bytes(array: np.ndarray) -> bytes:
    """A 16-bit PNG of a uint16 [H, W] or [H, W, 2|3|4] array (grey, grey+alpha, RGB, RGBA).

    PIL cannot write 16-bit colour PNGs, so this writes one from the specification; its rows use
    each of the five PNG filters in turn (None, Sub, Up, Average, Paeth), so a reader's unfiltering
    of 2-8 bytes per pixel is exercised too.
    """
    height, width = array.shape[:2]
    bands = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[bands]
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)
    step = 2 * bands  # Bytes per pixel.
    previous = np.zeros_like(rows[0])
    filtered = []
    for y, row in enumerate(rows):
        left = np.concatenate([np.zeros(step, np.int32), row[:-step]])
        upper_left = np.concatenate([np.zeros(step, np.int32), previous[:-step]])
        kind = y % 5
        if kind == 4:  # Paeth: the neighbour closest to left + up - upper left.
            estimate = left + previous - upper_left
            pa, pb, pc = np.abs(estimate - left), np.abs(estimate - previous), np.abs(estimate - upper_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, upper_left))
        else:
            predictor = [0 * row, left, previous, (left + previous) // 2][kind]
        filtered.append(bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
        previous = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(filtered)))
        + chunk(b"IEND", b"")
    )


def png_header_bytes(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG whose header claims `width` x `height` pixels, with (almost) no pixel data."""
    tail = png16_bytes(np.zeros((1, 1, 3), np.uint16))[33:]  # An IDAT (of one pixel) and IEND.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + crc + tail


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
