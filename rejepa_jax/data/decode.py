"""Decodes one record into a float32 [H, W, C] array in raw pixel units, and the data error types.

Images arrive as a file path (folder sources), as one file per band (BigEarthNet patch folders), as
encoded bytes (datasets written by `rejepa_jax.prepare`) or as arrays (tfds catalog datasets,
synthetic data). The format is read from the leading bytes, not from the file name, because encoded
bytes in a tfds record have no name.

Pixel values keep the file's own units, never rescaled: 0..255 for 8-bit images, 0..65535 for
16-bit ones (16-bit PNGs included, grey or colour, read at full depth), floats as stored.
`data.mean` / `data.std` are in the same units (`python -m rejepa_jax.stats` prints them), so the
normalised input is the same whatever the bit depth; a dataset mixing bit depths must be converted
to one first.

Every failure raises a `DataError` that names the file (or record id) and the reason, so that a bad
file in an archive of millions can be found, and so that the pipeline can skip and count it when the
config says so (`data.skip_bad`). Besides unreadable files, `BadImageError` covers:
- images above `data.max_image_pixels` values (height x width x bands), checked from the file header
  before any pixel is decoded. That check replaces PIL's own decompression-bomb guard, which is
  process-wide and ignores the config (a warning above 89M pixels, an error above 179M): it is
  switched off when this module is imported, and the config's limit applies to every format;
- non-finite values (NaN, +-inf: e.g. the nodata value of a float GeoTIFF) in a band the config
  keeps, which would otherwise surface much later as a NaN loss.

File names that are not valid UTF-8 appear in ids and messages with their undecodable bytes (and
'%') percent-encoded (`printable_name`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np
import tifffile
from PIL import Image

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

# The default of `data.max_image_pixels`: 1e8 values is 400 MB as float32 per decoded image (the
# pipeline holds a few per reading thread); a 10980 x 10980 Sentinel-2 tile of 4 bands at 10 m
# (4.8e8) is refused, while chips of up to 5000 x 5000 x 4 or 10000 x 10000 x 1 pass.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000

# Files up to this size are read whole before decoding.
_READ_WHOLE_BYTES = 64 << 20

# This module checks every image's size itself against the config's limit (see the module doc).
Image.MAX_IMAGE_PIXELS = None


class DataError(ValueError):
    """An input record is unusable (unreadable, corrupt, wrong band count, missing, empty split)."""


class BadImageError(DataError):
    """A file or encoded image cannot be read or decoded, is too large, or holds non-finite values."""


class ImageTooLargeError(BadImageError):
    """An image has more values (height x width x bands) than `data.max_image_pixels` allows."""


class BandCountError(DataError):
    """An image has a different number of bands than the config expects."""


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How records are decoded beyond the band count and selection: the `data.*` keys of these names.

    - `max_image_pixels`: the largest height x width x bands accepted, read from the file header
      before decoding; 0 disables the check.
    - `grey_to_rgb`: a one-band image (after `drop_alpha`) is repeated into 3 bands, before
      `data.bands` selects bands (grey JPEGs in an RGB archive).
    - `drop_alpha`: the alpha band of RGBA / grey+alpha PNGs (and of TIFFs whose ExtraSamples tag
      marks alpha) is dropped, before `data.bands` selects bands.
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    grey_to_rgb: bool = False
    drop_alpha: bool = False

    @classmethod
    def from_config(cls, data_config: Any) -> DecodeOptions:
        return cls(
            max_image_pixels=int(data_config.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)),
            grey_to_rgb=bool(data_config.get("grey_to_rgb", False)),
            drop_alpha=bool(data_config.get("drop_alpha", False)),
        )


def decode_record(
    record: Mapping[str, Any],
    channels: int,
    bands: Sequence[int] = (),
    options: DecodeOptions | None = None,
) -> np.ndarray:
    """Returns the record's image as float32 [H, W, C] in raw units, with `bands` kept and checked.

    A record holds `path` (a file read here), `band_paths` and `band_shapes` (one single-band file
    per band, see `decode_band_files`) or `image` (encoded bytes or an array). `bands` selects band
    indices in order (empty keeps all); the result must have `channels` bands and only finite values.
    """
    options = options or DecodeOptions()
    if "band_paths" in record:
        name = printable_name(str(record.get("id", "<record>")))
        image = decode_band_files(record["band_paths"], record["band_shapes"], name, options)
        alpha = False
    elif "path" in record:
        name = printable_name(str(record["path"]))
        image, alpha = _decode_path(record["path"], name, options)
    else:
        name = printable_name(str(record.get("id", "<record>")))
        value = record["image"]
        if isinstance(value, bytes):  # Also numpy.bytes_, a bytes subclass.
            image, alpha = _decode_stream(io.BytesIO(bytes(value)), name, options)
        else:
            image, alpha = array_to_hwc(np.asarray(value), name, options), False
    return _fit_bands(image, alpha, channels, tuple(bands), name, options)


def decode_band_files(
    paths: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    name: str,
    options: DecodeOptions | None = None,
) -> np.ndarray:
    """Reads one single-band file per band and stacks them, in order, on the finest band's grid.

    Archives such as BigEarthNet store each band at its native resolution (Sentinel-2: 10 m bands
    120 x 120, 20 m ones 60 x 60, 60 m ones 20 x 20 per patch). Each file must hold one band of
    exactly its `shapes` entry (height, width), else a BadImageError names the file; a missing file is
    a DataError naming it. Coarser bands are upsampled with `resize_bilinear` to the largest height
    and width in `shapes`. Values keep the files' units (float32), and non-finite values (e.g. NaN in
    Sentinel-1 backscatter) are refused naming the file. `name` (the record) is named in messages.
    """
    options = options or DecodeOptions()
    if len(paths) != len(shapes) or not paths:
        raise DataError(f"{name}: a band-file record needs one expected shape per band file.")
    grid = (max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes))
    stacked = []
    for path, shape in zip(paths, shapes, strict=True):
        file_name = printable_name(str(path))
        try:
            image, _ = _decode_path(path, file_name, options)
        except BadImageError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                raise DataError(f"Missing band file {file_name} (record {name}).") from e
            raise
        if image.shape[-1] != 1:
            raise BadImageError(f"{file_name}: expected one band per file, found {image.shape[-1]}.")
        expected = (int(shape[0]), int(shape[1]))
        if image.shape[:2] != expected:
            raise BadImageError(
                f"{file_name}: the band is {image.shape[0]} x {image.shape[1]} pixels, but its native "
                f"resolution in this archive gives {expected[0]} x {expected[1]} (record {name})."
            )
        check_finite(image, file_name, remedy="fill them in the file, or leave this band out")
        stacked.append(image[:, :, 0] if expected == grid else resize_bilinear(image[:, :, 0], grid))
    return np.stack(stacked, axis=-1)


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


def decode_file(f: BinaryIO, name: str, options: DecodeOptions | None = None) -> np.ndarray:
    """Decodes an open binary file (seekable) to float32 [H, W, C], all bands; its size is checked first."""
    return _decode_stream(f, name, options or DecodeOptions())[0]


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


def select_bands(
    image: np.ndarray,
    channels: int,
    bands: Sequence[int],
    name: str,
    *,
    file_bands: int | None = None,
    hint: str = "",
) -> np.ndarray:
    """Keeps `bands` (all when empty) and checks that `channels` bands remain.

    `file_bands` is the file's own band count when `image` was adapted (alpha dropped, grey
    repeated); `hint` names the options that would fix a band-count error.
    """
    found = image.shape[-1]
    if bands:
        out_of_range = [b for b in bands if not -found <= b < found]
        if out_of_range:
            raise BandCountError(
                f"{name}: data.bands={tuple(bands)} names band(s) {out_of_range}, but the image has "
                f"only {found} band(s).{hint}"
            )
        image = image[:, :, list(bands)]
    if image.shape[-1] != channels:
        selected = f" after selecting data.bands={tuple(bands)}" if bands else ""
        raise BandCountError(
            f"{name}: expected {channels} band(s) (data.channels) but found {image.shape[-1]}{selected} "
            f"(the file has {found if file_bands is None else file_bands}); set data.channels or pick "
            f"bands with data.bands.{hint}"
        )
    return image


def check_finite(
    image: np.ndarray,
    name: str,
    band_numbers: Sequence[int] | None = None,
    *,
    remedy: str = "fill them in the file, or leave such bands out with data.bands",
) -> None:
    """Raises a BadImageError naming the bands of `image` that hold NaN or +-inf values.

    `band_numbers[i]` is the file's number of band i of `image` (default: i), for the message;
    `remedy` ends it.
    """
    if np.isfinite(np.sum(image, dtype=np.float64)):  # One pass, no copy; NaN and inf propagate.
        return
    finite = np.isfinite(image)
    bad_pixels = (~finite).reshape(-1, image.shape[-1]).sum(axis=0)
    numbers = list(range(image.shape[-1])) if band_numbers is None else [int(b) for b in band_numbers]
    bad = sorted({numbers[i] for i in np.flatnonzero(bad_pixels)})
    raise BadImageError(
        f"{name}: band(s) {bad} (counting from 0) hold non-finite values (NaN or +-inf, e.g. a nodata "
        f"value) in {int(bad_pixels.max())} of {image.shape[0] * image.shape[1]} pixels; training "
        f"needs finite values: {remedy}."
    )


def printable_name(name: str) -> str:
    """`name` (a path as the OS gave it) as valid UTF-8 text, losslessly.

    Names that are valid UTF-8 are returned unchanged. Otherwise Python holds each undecodable
    byte as a surrogate ('surrogateescape'), which cannot be written as UTF-8; here each becomes
    '%XX' and each '%' becomes '%25', so `os.fsdecode(urllib.parse.unquote_to_bytes(result))` gives
    the name back.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    parts = []
    for char in name:
        if char == "%":
            parts.append("%25")
        elif "\udc80" <= char <= "\udcff":  # A byte that was not UTF-8.
            parts.append(f"%{ord(char) - 0xDC00:02X}")
        elif "\ud800" <= char <= "\udfff":  # Any other lone surrogate.
            parts.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            parts.append(char)
    return "".join(parts)


def _fit_bands(
    image: np.ndarray,
    alpha: bool,
    channels: int,
    bands: tuple[int, ...],
    name: str,
    options: DecodeOptions,
) -> np.ndarray:
    """Drops alpha / repeats grey as configured, selects `bands`, checks the count and finiteness."""
    file_bands = image.shape[-1]
    numbers = np.arange(file_bands)  # The file's band number of each band of `image`.
    hints = []  # The options that would change the band count, named in a band-count error.
    if alpha:
        if options.drop_alpha:
            image, numbers = image[:, :, :-1], numbers[:-1]
        else:
            hints.append("data.drop_alpha=True drops its alpha band (the last)")
    if image.shape[-1] == 1:
        if options.grey_to_rgb:
            image, numbers = np.repeat(image, 3, axis=-1), np.zeros(3, np.int64)
        elif channels == 3 or len(bands) == 3:
            hints.append("data.grey_to_rgb=True repeats its single (grey) band into 3 bands")
    hint = f" For this image: {'; '.join(hints)}." if hints else ""
    image = select_bands(image, channels, bands, name, file_bands=file_bands, hint=hint)
    if bands:
        numbers = numbers[list(bands)]
    check_finite(image, name, numbers)
    return image


def _decode_path(path: str, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
    """(float32 [H, W, C] image, whether its last band is alpha) of the file at `path`."""
    try:
        with open(path, "rb") as f:
            # Small files are read in one call (cheap on network file systems); larger ones are
            # decoded from the open file, so that a huge one is refused from its header alone.
            if os.fstat(f.fileno()).st_size <= _READ_WHOLE_BYTES:
                return _decode_stream(io.BytesIO(f.read()), name, options)
            return _decode_stream(f, name, options)
    except OSError as e:
        raise BadImageError(f"Cannot read {name}: {e}") from e


def _decode_stream(f: BinaryIO, name: str, options: DecodeOptions) -> tuple[np.ndarray, bool]:
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
