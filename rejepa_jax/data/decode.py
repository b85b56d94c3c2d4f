"""Decodes one record into a float32 [H, W, C] array in raw pixel units, and the data error types.

Images arrive as a file path (folder sources), as encoded bytes (datasets written by
`rejepa_jax.prepare`) or as arrays (tfds catalog datasets, synthetic data). The format is read from
the leading bytes, not from the file name, because encoded bytes in a tfds record have no name.

Every failure raises a `DataError` that names the file (or record id) and the reason, so that a bad
file in an archive of millions can be found, and so that the pipeline can skip and count it when the
config says so (`data.skip_bad`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tifffile
from PIL import Image

# Leading bytes of the formats decoded here.
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
# PIL modes converted before reading pixels: bit and palette images carry no band values of their own.
_PIL_CONVERSIONS = {"1": "L", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


class DataError(ValueError):
    """An input record is unusable (unreadable, corrupt, wrong band count, missing, empty split)."""


class BadImageError(DataError):
    """A file or encoded image cannot be read or decoded."""


class BandCountError(DataError):
    """An image has a different number of bands than the config expects."""


def decode_record(record: Mapping[str, Any], channels: int, bands: Sequence[int] = ()) -> np.ndarray:
    """Returns the record's image as float32 [H, W, C] in raw units, with `bands` kept and checked.

    A record holds either `path` (a file read here) or `image` (encoded bytes or an array). `bands`
    selects band indices in order (empty keeps all); the result must have `channels` bands.
    """
    if "path" in record:
        name = str(record["path"])
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImageError(f"Cannot read {name}: {e}") from e
        image = decode_bytes(data, name)
    else:
        name = str(record.get("id", "<record>"))
        value = record["image"]
        if isinstance(value, bytes):  # Also numpy.bytes_, a bytes subclass.
            image = decode_bytes(bytes(value), name)
        else:
            image = array_to_hwc(np.asarray(value), name)
    return select_bands(image, channels, bands, name)


def decode_bytes(data: bytes, name: str) -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, other PIL formats, TIFF, .npy) to float32 [H, W, C]."""
    if not data:
        raise BadImageError(f"Cannot decode {name}: the file is empty.")
    try:
        if data.startswith(_NPY_MAGIC):
            # An .npy file carries no layout, so the band axis is guessed like a tfds array's.
            return array_to_hwc(np.load(io.BytesIO(data), allow_pickle=False), name)
        image = _decode_tiff(data, name) if data.startswith(_TIFF_MAGICS) else _decode_pil(data)
    except DataError:
        raise
    except Exception as e:  # Decoders raise many types (OSError, ValueError, SyntaxError, ...).
        raise BadImageError(f"Cannot decode {name}: {type(e).__name__}: {e}") from e
    return _to_float32(image if image.ndim == 3 else image[:, :, None], name)


def array_to_hwc(image: np.ndarray, name: str) -> np.ndarray:
    """Returns `image` as float32 [H, W, C]; a 2-D array becomes one band, band-first becomes band-last.

    A 3-D array is taken as band-first only when its first axis is clearly the band axis (smaller
    than both spatial axes, while the last axis is not); otherwise it is band-last.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim == 3:
        first, height, last = image.shape
        if first < min(height, last) and not last < min(first, height):
            image = np.moveaxis(image, 0, -1)
    else:
        raise BadImageError(f"Cannot decode {name}: expected a 2-D or 3-D image, got shape {image.shape}.")
    return _to_float32(image, name)


def stack_bands(bands: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Stacks single-band 2-D arrays into float32 [H, W, C] on the finest band's grid.

    Catalog datasets such as BigEarthNet store each Sentinel-2 band as its own feature at its
    native resolution (10, 20 or 60 m); coarser bands are upsampled bilinearly to the finest one.
    """
    arrays = [np.asarray(band, dtype=np.float32) for band in bands]
    if any(a.ndim != 2 or 0 in a.shape for a in arrays):
        raise BadImageError(f"Cannot stack {name}: every band must be a non-empty 2-D array.")
    height, width = max(a.shape for a in arrays)
    resized = [
        a
        if a.shape == (height, width)
        else np.asarray(Image.fromarray(a, mode="F").resize((width, height), Image.BILINEAR))
        for a in arrays
    ]
    return np.stack(resized, axis=-1)


def select_bands(image: np.ndarray, channels: int, bands: Sequence[int], name: str) -> np.ndarray:
    """Keeps `bands` (all when empty) and checks that `channels` bands remain."""
    found = image.shape[-1]
    if bands:
        out_of_range = [b for b in bands if not -found <= b < found]
        if out_of_range:
            raise BandCountError(
                f"{name}: data.bands={tuple(bands)} names band(s) {out_of_range}, but the image has "
                f"only {found} band(s)."
            )
        image = image[:, :, list(bands)]
    if image.shape[-1] != channels:
        selected = f" after selecting data.bands={tuple(bands)}" if bands else ""
        raise BandCountError(
            f"{name}: expected {channels} band(s) (data.channels) but found {image.shape[-1]}{selected} "
            f"(the file has {found}); set data.channels or pick bands with data.bands."
        )
    return image


def _to_float32(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype.kind not in "biuf":
        raise BadImageError(f"Cannot decode {name}: unsupported pixel type {image.dtype}.")
    if image.ndim != 3 or 0 in image.shape:
        raise BadImageError(f"Cannot decode {name}: expected a non-empty [H, W, C] image, got {image.shape}.")
    return np.asarray(image, dtype=np.float32)


def _decode_pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # Decodes now, so that truncated files fail here rather than silently later.
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in _PIL_CONVERSIONS:
            img = img.convert(_PIL_CONVERSIONS[img.mode])
        return np.asarray(img)


def _decode_tiff(data: bytes, name: str) -> np.ndarray:
    """Reads the first TIFF series (full resolution) as [H, W] or band-last [H, W, C], using its axes."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        series = tif.series[0]
        image = series.asarray()
        axes = series.axes
    # Drop length-1 axes other than the spatial ones (e.g. a single time step or page).
    keep = [i for i, axis in enumerate(axes) if image.shape[i] > 1 or axis in "YX"]
    image = image.reshape([image.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if image.ndim == 3 and axes.endswith("YX"):
        return np.moveaxis(image, 0, -1)  # Planar (band-first) layout.
    if image.ndim == 3 and axes[:2] == "YX":
        return image  # Interleaved samples (band-last) layout.
    if image.ndim == 2:
        return image
    raise BadImageError(f"Cannot decode {name}: unsupported TIFF axes {axes!r} with shape {image.shape}.")
