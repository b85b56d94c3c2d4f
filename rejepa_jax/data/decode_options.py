"""`DecodeOptions`: the `data.*` settings of decoding beyond the band count and band selection.

They are read from the config once and passed down: the size limit to the image-format readers
(`image_formats`), alpha dropping and grey repetition to the record decoder (`decode`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The default of `data.max_image_pixels`: 1e8 values is 400 MB as float32 per decoded image (the
# pipeline holds a few per reading thread); a 10980 x 10980 Sentinel-2 tile of 4 bands at 10 m
# (4.8e8) is refused, while chips of up to 5000 x 5000 x 4 or 10000 x 10000 x 1 pass.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


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
