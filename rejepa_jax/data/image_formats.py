"""Reads one image (a file, encoded bytes or an array) into float32 [H, W, C], checking its size first.

The format is read from the leading bytes, not from the file name, because encoded bytes in a tfds
record have no name: JPEG, PNG and the other PIL formats, TIFF (tifffile) and .npy. The readers
also say whether the image's last band is alpha, for `decode` to drop or keep.

Pixel values keep the file's own units, never rescaled: 0..255 for 8-bit images, 0..65535 for
16-bit ones (16-bit PNGs included, grey or colour, read at full depth), floats as stored.
`data.mean` / `data.std` are in the same units (`python -m rejepa_jax.stats` prints them), so the
normalised input is the same whatever the bit depth; a dataset mixing bit depths must be converted
to one first.

Unreadable or undecodable files raise a `BadImageError` naming the file. Images above
`data.max_image_pixels` values (height x width x bands) raise an `ImageTooLargeError`, checked from
the file header before any pixel is decoded. That check replaces PIL's own decompression-bomb guard,
which is process-wide and ignores the config (a warning above 89M pixels, an error above 179M): it
is switched off when this module is imported, and the config's limit applies to every format.
"""

from __future__ import annotations

import io
import math
import os
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.errors import BadImageError, DataError, ImageTooLargeError

# Leading bytes of the formats decoded here.
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"
# PIL modes converted before reading pixels: bit and palette images carry no band values of their own.
_PIL_CONVERSIONS = {"1": "L", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
# PIL modes whose last band is alpha.
_PIL_ALPHA_MODES = ("RGBA", "LA", "RGBa", "La")
# PIL reads 16-bit colour PNGs into 8-bit modes through these raw modes, keeping the high bytes.
# The "16L" raw modes take the other byte of each sample instead, and the plain "RGBA" raw mode of
# a grey+alpha PNG keeps all four bytes of a pixel; both unfilter exactly like the originals (the
# same bits per pixel), so two decodes (one for LA) give the full 16-bit values.
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_PNG16_GREY_ALPHA = "LA;16B"
# TIFF ExtraSamples values that mark an alpha band (associated, unassociated).
_TIFF_ALPHA = (1, 2)

# Files up to this size are read whole before decoding.
_READ_WHOLE_BYTES = 64 << 20

# This module checks every image's size itself against the config's limit (see the module doc).
Image.MAX_IMAGE_PIXELS = None


def decode_file(f: BinaryIO, name: str, options: DecodeOptions | None = None) -> np.ndarray:
    """Decodes an open binary file (seekable) to float32 [H, W, C], all bands; its size is checked first."""
    return decode_stream(f, name, options or DecodeOptions())[0]


def decode_bytes(data: bytes, name: str, options: DecodeOptions | None = None) -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, other PIL formats, TIFF, .npy) to float32 [H, W, C]."""
    return decode_file(io.BytesIO(data), name, options)


def array_to_hwc(image: np.ndarray, name: str, options: DecodeOptions | None = None) -> np.ndarray:
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
    _check_size(name, f"an array of shape {image.shape}", image.size, options or DecodeOptions())
    return _to_float32(image, name)


def decode_path(path: str, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
    """(float32 [H, W, C] image, whether its last band is alpha) of the file at `path`."""
    try:
        with open(path, "rb") as f:
            # Small files are read in one call (cheap on network file systems); larger ones are
            # decoded from the open file, so that a huge one is refused from its header alone.
            if os.fstat(f.fileno()).st_size <= _READ_WHOLE_BYTES:
                return decode_stream(io.BytesIO(f.read()), name, options)
            return decode_stream(f, name, options)
    except OSError as e:
        raise BadImageError(f"Cannot read {name}: {e}") from e


def decode_stream(f: BinaryIO, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
    """(float32 [H, W, C] image, whether its last band is alpha) of an open seekable file."""
    try:
        head = f.read(len(_NPY_MAGIC))
        f.seek(0)
    except OSError as e:
        raise BadImageError(f"Cannot read {name}: {e}") from e
    if not head:
        raise BadImageError(f"Cannot decode {name}: the file is empty.")
    try:
        if head.startswith(_NPY_MAGIC):
            # An .npy file carries no layout, so the band axis is guessed like a tfds array's.
            return array_to_hwc(_load_npy(f, name, options), name, options), False
        if head.startswith(_TIFF_MAGICS):
            image, alpha = _decode_tiff(f, name, options)
        else:
            image, alpha = _decode_pil(f, name, options)
    except DataError:
        raise
    except Exception as e:  # Decoders raise many types (OSError, ValueError, SyntaxError, ...).
        raise BadImageError(f"Cannot decode {name}: {type(e).__name__}: {e}") from e
    return _to_float32(image if image.ndim == 3 else image[:, :, None], name), alpha


def _check_size(name: str, size: str, values: int, options: DecodeOptions) -> None:
    """Refuses an image of more than `options.max_image_pixels` values (height x width x bands)."""
    limit = options.max_image_pixels
    if limit > 0 and values > limit:
        raise ImageTooLargeError(
            f"{name}: {size} = {values:,} values exceeds "
            f"data.max_image_pixels={limit:,} (checked from the header, before decoding; as float32 the "
            f"image alone would take {values * 4 / 2**30:.1f} GiB). Cut it into tiles, or raise "
            "data.max_image_pixels if the memory allows (0 disables the check)."
        )


def _pixels_text(width: int, height: int, bands: int) -> str:
    return f"{width} x {height} pixels x {bands} band(s)"


def _to_float32(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype.kind not in "biuf":
        raise BadImageError(f"Cannot decode {name}: unsupported pixel type {image.dtype}.")
    if image.ndim != 3 or 0 in image.shape:
        raise BadImageError(f"Cannot decode {name}: expected a non-empty [H, W, C] image, got {image.shape}.")
    return np.asarray(image, dtype=np.float32)


def _load_npy(f: BinaryIO, name: str, options: DecodeOptions) -> np.ndarray:
    """Reads an .npy file, checking the size its header declares before reading the values."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, _ = np.lib.format.read_array_header_2_0(f)
    _check_size(name, f"an array of shape {tuple(shape)}", math.prod(shape), options)
    f.seek(0)
    return np.load(f, allow_pickle=False)


def _decode_pil(f: BinaryIO, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
    with Image.open(f) as img:  # Reads the header only.
        rawmode = img.tile[0].args if img.format == "PNG" and len(img.tile) == 1 else None
        if rawmode == _PNG16_GREY_ALPHA:
            bands = 2
        elif img.mode == "P":
            bands = 4 if "transparency" in img.info else 3
        else:
            bands = Image.getmodebands(_PIL_CONVERSIONS.get(img.mode, img.mode))
        _check_size(name, _pixels_text(img.width, img.height, bands), img.width * img.height * bands, options)
        if rawmode == _PNG16_GREY_ALPHA or rawmode in _PNG16_LOW_BYTES:
            return _decode_png16(img, f, rawmode), rawmode != "RGB;16B"
        img.load()  # Decodes now, so that truncated files fail here rather than silently later.
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in _PIL_CONVERSIONS:
            img = img.convert(_PIL_CONVERSIONS[img.mode])
        return np.asarray(img), img.mode in _PIL_ALPHA_MODES


def _decode_png16(img: Image.Image, f: BinaryIO, rawmode: str) -> np.ndarray:
    """The uint16 [H, W, C] pixels of a 16-bit colour or grey+alpha PNG, opened as `img`."""
    if rawmode == _PNG16_GREY_ALPHA:
        img.tile = [tile._replace(args="RGBA") for tile in img.tile]
        img.load()
        packed = np.asarray(img).astype(np.uint16)  # grey high, grey low, alpha high, alpha low.
        return (packed[:, :, 0::2] << 8) | packed[:, :, 1::2]
    img.load()
    high = np.asarray(img).astype(np.uint16)
    f.seek(0)
    with Image.open(f) as again:
        again.tile = [tile._replace(args=_PNG16_LOW_BYTES[rawmode]) for tile in again.tile]
        again.load()
        low = np.asarray(again)
    return (high << 8) | low


def _decode_tiff(f: BinaryIO, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
    """Reads the first TIFF series (full resolution) as [H, W] or band-last [H, W, C], using its axes.

    The series' shape comes from the page headers, so its size is checked before its pixels are read.
    """
    with tifffile.TiffFile(f) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        height = shape[axes.index("Y")] if "Y" in axes else 1
        width = shape[axes.index("X")] if "X" in axes else 1
        values = math.prod(shape)
        _check_size(name, _pixels_text(width, height, values // max(1, width * height)), values, options)
        extrasamples = tuple(getattr(series.keyframe, "extrasamples", ()) or ())
        image = series.asarray()
    # Drop length-1 axes other than the spatial ones (e.g. a single time step or page).
    keep = [i for i, axis in enumerate(axes) if image.shape[i] > 1 or axis in "YX"]
    image = image.reshape([image.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    alpha = "S" in axes and bool(extrasamples) and int(extrasamples[-1]) in _TIFF_ALPHA
    if image.ndim == 3 and axes.endswith("YX"):
        return np.moveaxis(image, 0, -1), alpha  # Planar (band-first) layout.
    if image.ndim == 3 and axes[:2] == "YX":
        return image, alpha  # Interleaved samples (band-last) layout.
    if image.ndim == 2:
        return image, False
    raise BadImageError(f"Cannot decode {name}: unsupported TIFF axes {axes!r} with shape {image.shape}.")
