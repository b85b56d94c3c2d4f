r"""Prints the per-band mean and std of the train split, in raw pixel units, for `data.mean/std`.

    python -m rejepa_jax.stats --config configs/x.py [--config.data.root=...] [--max_images N]

Images are only decoded (bands selected, alpha dropped and grey repeated as in training, no crop
or resize; 16-bit images at full depth, so the statistics are in 0..65535 units), in the config's
source order, and accumulated per image in float64 with Chan's parallel update, which stays exact
for 16-bit bands and billions of pixels. The std is the population std over all pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.errors import DataError
from rejepa_jax.data.sources import make_source

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Use only the first N images of the split (0: all).")
_LOG_EVERY = 1000


@dataclasses.dataclass
class BandStatistics:
    """Running per-band pixel count, mean and sum of squared deviations (float64)."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    num_images: int = 0

    def add(self, image: np.ndarray) -> None:
        """Merges one [H, W, C] image (Chan et al.'s pairwise update)."""
        pixels = image.reshape(-1, image.shape[-1]).astype(np.float64)
        n = pixels.shape[0]
        mean = pixels.mean(axis=0)
        m2 = ((pixels - mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
        else:
            if mean.shape != self.mean.shape:
                raise DataError(f"Images have {self.mean.shape[0]} and {mean.shape[0]} bands.")
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * n / total
            self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
            self.count = total
        self.num_images += 1

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


@dataclasses.dataclass(frozen=True)
class _Decode:
    """Decodes a record; a bad one becomes None (dropped by grain) when `skip_bad`."""

    channels: int
    bands: tuple[int, ...]
    skip_bad: bool
    options: DecodeOptions

    def __call__(self, record: dict[str, Any]) -> np.ndarray | None:
        try:
            return decode_record(record, self.channels, self.bands, self.options)
        except DataError:
            if self.skip_bad:
                return None
            raise


def compute_statistics(
    data_config: ml_collections.ConfigDict, max_images: int = 0
) -> tuple[BandStatistics, int]:
    """Streams the train split; returns the statistics and the number of bad images skipped."""
    source = make_source(data_config, "train")
    num_images = len(source) if max_images <= 0 else min(max_images, len(source))
    ds = grain.MapDataset.source(source)[:num_images]
    ds = ds.map(
        _Decode(
            data_config.channels,
            tuple(data_config.bands),
            data_config.skip_bad,
            DecodeOptions.from_config(data_config),
        )
    )
    read_options = grain.ReadOptions(num_threads=max(1, data_config.num_threads), prefetch_buffer_size=64)
    stats = BandStatistics()
    for image in ds.to_iter_dataset(read_options):
        stats.add(image)
        if stats.num_images % _LOG_EVERY == 0:
            logging.info("%d / %d images", stats.num_images, num_images)
    if stats.num_images == 0:
        raise DataError(f"No readable image among the first {num_images} of {source}.")
    return stats, num_images - stats.num_images


def override_flags(mean: Sequence[float], std: Sequence[float]) -> str:
    """The command-line overrides setting data.mean and data.std, quoted for the shell."""

    def as_tuple(values: Sequence[float]) -> str:
        return "(" + ",".join(f"{v:.3f}" for v in values) + ("," if len(values) == 1 else "") + ")"

    return f"'--config.data.mean={as_tuple(mean)}' '--config.data.std={as_tuple(std)}'"


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    stats, skipped = compute_statistics(_CONFIG.value.data, _MAX_IMAGES.value)
    print(f"Train split: {stats.num_images} images, {stats.count} pixels per band, {skipped} bad skipped.")
    for band, (mean, std) in enumerate(zip(stats.mean, stats.std, strict=True)):
        print(f"  band {band}: mean {mean:.3f}  std {std:.3f}")
    print(override_flags(stats.mean, stats.std))


def run() -> None:
    """Console-script entry point (`rejepa-stats`)."""
    app.run(main)


if __name__ == "__main__":
    run()
