"""Decodes one record into a float32 [H, W, C] array in raw pixel units, with the config's bands.

Images arrive as a file path (folder sources), as one file per band (BigEarthNet patch folders), as
encoded bytes (datasets written by `rejepa_jax.prepare`) or as arrays (tfds catalog datasets,
synthetic data). `image_formats` reads each file, bytes or array (in the file's own units),
`band_resampling` puts band files on one grid. Here the alpha band is dropped or a grey band
repeated as `DecodeOptions` says, `data.bands` selects bands, and the result is checked:
- its band count against `data.channels` (`BandCountError`);
- non-finite values (NaN, +-inf: e.g. the nodata value of a float GeoTIFF) in a band the config
  keeps (`BadImageError`), which would otherwise surface much later as a NaN loss.

Every failure raises a `DataError` (`errors`) that names the file or record id.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rejepa_jax.data.band_resampling import resize_bilinear
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.errors import BadImageError, BandCountError, DataError, printable_name
from rejepa_jax.data.image_formats import array_to_hwc, decode_path, decode_stream


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
        image, alpha = decode_path(record["path"], name, options)
    else:
        name = printable_name(str(record.get("id", "<record>")))
        value = record["image"]
        if isinstance(value, bytes):  # Also numpy.bytes_, a bytes subclass.
            image, alpha = decode_stream(io.BytesIO(bytes(value)), name, options)
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
            image, _ = decode_path(path, file_name, options)
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
