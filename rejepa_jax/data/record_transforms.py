"""The per-record grain maps: one record -> a train example (views and masks) or an eval row.

Both decode the record (`decode`) and, when that fails, return a bad-record marker (`bad_records`)
instead of raising, so that the pipeline can skip and count the record in order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from rejepa_jax.data import augment
from rejepa_jax.data.bad_records import bad_record
from rejepa_jax.data.bigearthnet import read_patch_labels
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.errors import DataError
from rejepa_jax.masking import MaskSampler


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """One record -> its views and masks, or a bad-record marker if it fails to decode.

    Each global view is a random resized crop to `image_size`, randomly flipped (and rotated by a
    multiple of 90 degrees with `rotate90`), normalised, with masks of its own; each local view is a
    crop from `local_crop_scale` resized to `local_size`, augmented the same way, without masks. The
    random draws come in that order, view by view, so one global view without rotations draws
    exactly what the single-view pipeline always drew.
    """

    image_size: int
    channels: int
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip_horizontal: bool
    flip_vertical: bool
    mask_sampler: MaskSampler
    rotate90: bool = False
    global_views: int = 1
    local_views: int = 0
    local_size: int = 0
    local_crop_scale: tuple[float, float] = (0.1, 0.4)
    decode_options: DecodeOptions = dataclasses.field(default_factory=DecodeOptions)

    @classmethod
    def from_config(cls, data_config: ml_collections.ConfigDict, mask_sampler: MaskSampler) -> TrainTransform:
        if data_config.global_views < 1 or data_config.local_views < 0:
            raise ValueError(
                f"data.global_views must be >= 1 and data.local_views >= 0, got "
                f"{data_config.global_views} and {data_config.local_views}."
            )
        return cls(
            image_size=data_config.image_size,
            channels=data_config.channels,
            bands=tuple(data_config.bands),
            mean=tuple(data_config.mean),
            std=tuple(data_config.std),
            crop_scale=tuple(data_config.crop_scale),
            crop_ratio=tuple(data_config.crop_ratio),
            flip_horizontal=data_config.flip_horizontal,
            flip_vertical=data_config.flip_vertical,
            mask_sampler=mask_sampler,
            rotate90=data_config.rotate90,
            global_views=data_config.global_views,
            local_views=data_config.local_views,
            local_size=data_config.local_size,
            local_crop_scale=tuple(data_config.local_crop_scale),
            decode_options=DecodeOptions.from_config(data_config),
        )

    def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        try:
            image = decode_record(record, self.channels, self.bands, self.decode_options)
        except DataError as e:
            return bad_record(e)
        views, contexts, targets = [], [], []
        for _ in range(self.global_views):
            views.append(self._view(image, self.image_size, self.crop_scale, rng))
            context_idx, target_idx = self.mask_sampler.sample(rng)
            contexts.append(context_idx)
            targets.append(target_idx)
        if self.global_views == 1:
            example = {"image": views[0], "context_idx": contexts[0], "target_idx": targets[0]}
        else:
            example = {
                "image": np.stack(views),
                "context_idx": np.stack(contexts),
                "target_idx": np.stack(targets),
            }
        if self.local_views:
            example["local_image"] = np.stack(
                [
                    self._view(image, self.local_size, self.local_crop_scale, rng)
                    for _ in range(self.local_views)
                ]
            )
        return example

    def _view(
        self, image: np.ndarray, size: int, scale: tuple[float, float], rng: np.random.Generator
    ) -> np.ndarray:
        view = augment.random_resized_crop(image, size, scale, self.crop_ratio, rng)
        view = augment.random_flips(view, self.flip_horizontal, self.flip_vertical, rng)
        if self.rotate90:
            view = augment.random_rotate90(view, rng)
        return augment.normalise(view, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """One record -> {image, label, id, valid}: deterministic resize and normalise, no randomness."""

    image_size: int
    channels: int
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    multi_label: bool
    decode_options: DecodeOptions = dataclasses.field(default_factory=DecodeOptions)

    @classmethod
    def from_config(cls, data_config: ml_collections.ConfigDict) -> EvalTransform:
        return cls(
            image_size=data_config.image_size,
            channels=data_config.channels,
            bands=tuple(data_config.bands),
            mean=tuple(data_config.mean),
            std=tuple(data_config.std),
            num_classes=data_config.num_classes,
            multi_label=data_config.multi_label,
            decode_options=DecodeOptions.from_config(data_config),
        )

    def __call__(self, index: int, record: dict[str, Any]) -> dict[str, Any]:
        """`index` is the record's position in its split, kept so rows can be matched across hosts."""
        try:
            image = decode_record(record, self.channels, self.bands, self.decode_options)
            label = self.label(_record_label(record), str(record["id"]))
        except DataError as e:
            return bad_record(e)
        image = augment.normalise(augment.resize(image, self.image_size), self.mean, self.std)
        return {
            "image": image,
            "label": label,
            "id": str(record["id"]),
            "index": np.int64(index),
            "valid": True,
        }

    def label(self, value: Any, name: str) -> np.ndarray:
        """int32 scalar, or with `multi_label` a float32 multi-hot vector from multi-hot or class indices."""
        value = np.asarray(value)
        if not self.multi_label:
            if value.size != 1 or value.dtype.kind not in "iu":
                raise DataError(f"{name}: label {value!r} is not one class index; set data.multi_label?")
            return np.int32(value.reshape(()))
        if value.dtype.kind in "fb" and value.shape == (self.num_classes,):
            return value.astype(np.float32)
        if value.dtype.kind in "iu" and value.ndim <= 1:
            indices = value.reshape(-1)
            indices = indices[indices >= 0]  # -1 marks an unlabelled example.
            if np.any(indices >= self.num_classes):
                raise DataError(f"{name}: label {value!r} exceeds data.num_classes={self.num_classes}.")
            multi_hot = np.zeros(self.num_classes, np.float32)
            multi_hot[indices] = 1.0
            return multi_hot
        raise DataError(f"{name}: cannot read label {value!r} as multi-hot over {self.num_classes} classes.")

    def padding(self) -> dict[str, Any]:
        """The element that pads the last batch: zeros, valid=False."""
        size, label_shape = self.image_size, (self.num_classes,) if self.multi_label else ()
        return {
            "image": np.zeros((size, size, self.channels), np.float32),
            "label": np.zeros(label_shape, np.float32 if self.multi_label else np.int32),
            "id": "",
            "index": np.int64(-1),
            "valid": False,
            "skipped": np.int32(0),
        }


def _record_label(record: dict[str, Any]) -> Any:
    """The record's label; a BigEarthNet record's is read from its label file here, in the map."""
    if "labels_path" in record:
        return read_patch_labels(record["labels_path"], record["label_set"])
    return record["label"]
