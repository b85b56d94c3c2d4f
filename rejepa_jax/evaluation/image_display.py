"""Images as RGB ready for display: band choice and stretch of multispectral, radar or RGB tiles.

Kept apart from the figures that show them (`result_gallery`; `report_figures` picks the bands and
range from the config) because choosing and scaling bands is a question of the data (sensor, units),
not of drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Per-band percentile stretch of images that are not already in display range.
STRETCH_PERCENTILES = (2.0, 98.0)


def _stretch_band(band: np.ndarray) -> np.ndarray:
    """One band mapped to [0, 1] between its 2nd and 98th percentiles; constant or empty bands go to 0."""
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return np.zeros(band.shape, dtype=np.float32)
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if hi <= lo:
        return np.zeros(band.shape, dtype=np.float32)
    out = (band - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)


def to_display(
    image: np.ndarray,
    *,
    bands: Sequence[int] = (),
    value_range: Sequence[float] = (),
) -> np.ndarray:
    """An image [H, W] or [H, W, C] as float32 RGB [H, W, 3] in [0, 1], ready for `imshow`.

    `bands` picks the bands shown as (red, green, blue), or one band shown in grey, by index into the
    image (`eval.display_bands`; e.g. B04, B03, B02 of a Sentinel-2 stack for true colour); () keeps
    the first three. `value_range` (low, high) in the image's raw units maps every shown band linearly
    to [0, 1] with the same two numbers, clipped (`eval.display_range`): the bands keep their relative
    brightness, so colours are true colours and comparable between tiles.

    Without `value_range`: three-band uint8, or three-band float already inside [0, 1], is taken as
    display-ready RGB and only rescaled. Anything else is not in display range: multispectral
    reflectances fill a small part of their numeric range (and S1 backscatter in dB is negative), so a
    raw display is black or saturated. Those images show their first three bands (one band, or two,
    show the first band in grey) after a 2–98 percentile stretch of each band of this image alone,
    which clips a few outliers (clouds, saturated or no-data pixels) and fills the display range. That
    stretch is per band because bands of different sensors have unrelated scales; its colours are
    therefore for looking, not for comparing radiometry between tiles.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"Need an image [H, W] or [H, W, C]: got shape {image.shape}.")
    if len(bands):
        bands = [int(b) for b in bands]
        if len(bands) not in (1, 3) or not all(-image.shape[2] <= b < image.shape[2] for b in bands):
            raise ValueError(f"Display bands {bands} must be 1 or 3 indices into {image.shape[2]} bands.")
        image = image[:, :, bands]
    if len(value_range):
        return _linear_stretch(image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1], value_range)
    if image.shape[2] == 3:
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        in_range = np.issubdtype(image.dtype, np.floating) and np.all((image >= 0.0) & (image <= 1.0))
        if in_range:
            return image.astype(np.float32)
    bands = image[:, :, :3] if image.shape[2] >= 3 else image[:, :, :1]
    stretched = np.stack(
        [_stretch_band(bands[:, :, i].astype(np.float64)) for i in range(bands.shape[2])], -1
    )
    if stretched.shape[2] == 1:
        stretched = np.repeat(stretched, 3, axis=2)
    return stretched


def _linear_stretch(bands: np.ndarray, value_range: Sequence[float]) -> np.ndarray:
    """Bands [H, W, 1 or 3] mapped by (x - low) / (high - low) into [0, 1], clipped; one band in grey."""
    if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
        raise ValueError(f"Need a display range (low, high) with high > low: got {tuple(value_range)}.")
    low, high = float(value_range[0]), float(value_range[1])
    out = (bands.astype(np.float64) - low) / (high - low)
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out
