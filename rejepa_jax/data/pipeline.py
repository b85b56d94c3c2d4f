"""Grain input pipelines: per-host, checkpointable iterators of fixed-shape numpy batches.

Train: source -> seed/shuffle/repeat (a new order every epoch) -> per-example random map (decode,
random resized crop, flips, normalise, multi-block masks) -> this host's slice -> threaded reads
(and worker processes when `data.num_workers > 0`) -> drop and count bad records -> batch.

Two orderings differ from the textbook chain, both for exact determinism:
- The random map runs before the per-host slice, so an example's augmentation and masks depend on
  its global position only, never on the number of hosts, and hosts never share random streams.
- Bad records are dropped and elements batched after the worker processes, in this process. Grain
  slices the data over workers element by element and interleaves their outputs round-robin, so
  this keeps the element order, and thus every batch and every `skipped` count, identical for any
  `data.num_workers` and `data.num_threads`.

Batch contracts (B = per-host batch, S = data.image_size, C = data.channels):
- train: image f32 [B,S,S,C] (normalised), context_idx i32 [B,Kc], target_idx i32 [B,M,Kt],
  skipped i32 [B] (bad records dropped just before each example). With G = data.global_views > 1
  the first three get a view axis ([B,G,S,S,C], [B,G,Kc], [B,G,M,Kt]); with L = data.local_views
  > 0 there is also local_image f32 [B,L,s,s,C] (s = data.local_size).
- eval: image f32 [B,S,S,C], label i32 [B] (or f32 [B,num_classes] multi-hot with
  data.multi_label), id str [B], index i64 [B] (position in the split, -1 on padding rows),
  valid bool [B] (False on padding rows), skipped i32 [B] (bad
  records dropped before a row; ones after the last example are counted on the first padding row).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from rejepa_jax.data import augment
from rejepa_jax.data.bigearthnet import read_patch_labels
from rejepa_jax.data.decode import (
    BadImageError,
    BandCountError,
    DataError,
    DecodeOptions,
    ImageTooLargeError,
    decode_record,
)
from rejepa_jax.data.sources import Source, make_source
from rejepa_jax.masking import MaskSampler

# A record that failed to decode travels down the pipeline as {_ERROR_KEY: message, _ERROR_TYPE_KEY:
# class name}, so that it reaches `SkipBadIterDataset` in order, also from worker processes.
_ERROR_KEY = "data_error"
_ERROR_TYPE_KEY = "data_error_type"
_ERROR_TYPES = {cls.__name__: cls for cls in (DataError, BadImageError, BandCountError, ImageTooLargeError)}


def _bad_record(error: DataError) -> dict[str, str]:
    return {_ERROR_KEY: str(error), _ERROR_TYPE_KEY: type(error).__name__}


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
            return _bad_record(e)
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
        return augment.normalize(view, self.mean, self.std)


def view_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The view settings that shape a train batch (`state.batch_shapes` keywords)."""
    local_views = config.data.local_views
    return {
        "global_views": config.data.global_views,
        "local_views": local_views,
        "local_size": config.data.local_size if local_views else 0,
    }


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
            return _bad_record(e)
        image = augment.normalize(augment.resize(image, self.image_size), self.mean, self.std)
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


class SkipBadIterDataset(grain.IterDataset):
    """Drops bad-record markers (or raises their error) and adds `skipped` to every element.

    `skipped` counts the bad records dropped since the previous element, so the counts over a run
    sum to exactly the number of bad records read. On a finite stream, bad records after the last
    element are reported on one extra `end_element` (when given). Its state is the parent's: every
    bad record before an element is consumed together with that element.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        skip_bad: bool,
        max_consecutive: int,
        end_element: dict[str, Any] | None = None,
    ):
        super().__init__(parent)
        self._skip_bad = skip_bad
        self._max_consecutive = max_consecutive
        self._end_element = end_element

    def __iter__(self) -> grain.DatasetIterator:
        return _SkipBadIterator(
            self._parent.__iter__(), self._skip_bad, self._max_consecutive, self._end_element
        )

    def __str__(self) -> str:
        return f"SkipBadIterDataset(skip_bad={self._skip_bad})"


class _SkipBadIterator(grain.DatasetIterator):
    def __init__(
        self,
        parent: grain.DatasetIterator,
        skip_bad: bool,
        max_consecutive: int,
        end_element: dict[str, Any] | None,
    ):
        super().__init__(parent)
        self._skip_bad = skip_bad
        self._max_consecutive = max_consecutive
        self._end_element = end_element

    def __next__(self) -> dict[str, Any]:
        skipped = 0
        while True:
            try:
                element = next(self._parent)
            except StopIteration:
                if skipped and self._end_element is not None:
                    return {**self._end_element, "skipped": np.int32(skipped)}
                raise
            if _ERROR_KEY not in element:
                return {**element, "skipped": np.int32(skipped)}
            if not self._skip_bad:
                raise _ERROR_TYPES.get(element[_ERROR_TYPE_KEY], DataError)(
                    f"{element[_ERROR_KEY]} (set data.skip_bad=True to skip and count bad records)"
                )
            skipped += 1
            if skipped >= self._max_consecutive:
                raise DataError(
                    f"{skipped} records in a row failed to decode; the data has no usable example. "
                    f"Last error: {element[_ERROR_KEY]}"
                )

    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)


class PadIterDataset(grain.IterDataset):
    """Emits the parent's elements followed by copies of `padding`, exactly `length` elements in all."""

    def __init__(self, parent: grain.IterDataset, *, length: int, padding: dict[str, Any]):
        super().__init__(parent)
        self._length = length
        self._padding = padding

    def __iter__(self) -> grain.DatasetIterator:
        return _PadIterator(self._parent.__iter__(), self._length, self._padding)

    def __str__(self) -> str:
        return f"PadIterDataset(length={self._length})"


class _PadIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, length: int, padding: dict[str, Any]):
        super().__init__(parent)
        self._length = length
        self._padding = padding
        self._emitted = 0
        self._parent_done = False

    def __next__(self) -> dict[str, Any]:
        if self._emitted >= self._length:
            raise StopIteration
        element = self._padding
        if not self._parent_done:
            try:
                element = next(self._parent)
            except StopIteration:
                self._parent_done = True
        self._emitted += 1
        if self._emitted == self._length and not self._parent_done:
            self._check_parent_done()
        return element

    def _check_parent_done(self) -> None:
        try:
            next(self._parent)
        except StopIteration:
            self._parent_done = True
            return
        raise RuntimeError(f"The padded stream has more than {self._length} elements.")

    def get_state(self) -> dict[str, Any]:
        return {
            "parent": self._parent.get_state(),
            "emitted": self._emitted,
            "parent_done": self._parent_done,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._emitted = state["emitted"]
        self._parent_done = state["parent_done"]


def train_records(source: Source, seed: int) -> grain.MapDataset:
    """The infinite stream of records in a fresh random order every epoch.

    Grain's `shuffle` uses the seed `seed + epoch` for indices past the first epoch, and `repeat`
    (reseed_each_epoch=True by default) passes indices through, so epochs are reshuffled.
    """
    return grain.MapDataset.source(source).seed(seed).shuffle().repeat()


def make_train_iterator(
    config: ml_collections.ConfigDict,
    mask_sampler: MaskSampler,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Returns this host's infinite, checkpointable iterator of train batches (see the module doc)."""
    data = config.data
    batch_size = per_host_batch_size(config.batch_size, process_count)
    _check_normalization(data)
    source = _non_empty_source(data, "train", process_count)
    ds = train_records(source, config.seed)
    ds = ds.random_map(TrainTransform.from_config(data, mask_sampler))
    ds = ds[process_index::process_count]
    ds = _read_in_parallel(ds, data, batch_size)
    # Past this many bad records in a row every record has been tried at least once: all are bad.
    ds = SkipBadIterDataset(ds, skip_bad=data.skip_bad, max_consecutive=2 * len(source) + 1)
    return iter(ds.batch(batch_size, drop_remainder=True))


def make_eval_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Returns this host's iterator over a whole split ("query" or "archive"), in source order.

    `batch_size` is this host's number of rows per batch. Every host yields the same number of
    batches; rows past the end are padding with valid=False, so shapes are static and every example
    appears exactly once over all hosts.
    """
    data = config.data
    if batch_size < 1:
        raise ValueError(f"The eval batch size must be positive, got {batch_size}.")
    _check_normalization(data)
    source = _non_empty_source(data, split, process_count)
    transform = EvalTransform.from_config(data)
    num_batches = num_eval_batches(len(source), batch_size, process_count)
    ds = grain.MapDataset.source(source).map_with_index(transform)[process_index::process_count]
    ds = _read_in_parallel(ds, data, batch_size)
    padding = transform.padding()
    ds = SkipBadIterDataset(ds, skip_bad=data.skip_bad, max_consecutive=len(source) + 1, end_element=padding)
    ds = PadIterDataset(ds, length=num_batches * batch_size, padding=padding)
    return iter(ds.batch(batch_size, drop_remainder=True))


def num_examples(config: ml_collections.ConfigDict, split: str) -> int:
    """Number of examples in a split ("train", "query" or "archive"), before any is skipped."""
    return len(make_source(config.data, split))


def num_eval_batches(num_records: int, batch_size: int, process_count: int = 1) -> int:
    """Batches every host yields for a split of `num_records`, with `batch_size` rows per host."""
    return math.ceil(math.ceil(num_records / process_count) / batch_size)


def per_host_batch_size(batch_size: int, process_count: int) -> int:
    """The global `batch_size` split evenly over `process_count` hosts."""
    if batch_size < process_count or batch_size % process_count:
        raise ValueError(
            f"The batch size {batch_size} must be a positive multiple of the number of processes "
            f"({process_count})."
        )
    return batch_size // process_count


def _non_empty_source(data: ml_collections.ConfigDict, split: str, process_count: int) -> Source:
    source = make_source(data, split)
    if len(source) < process_count:
        raise DataError(
            f"The {split} split ({source}) has {len(source)} example(s), fewer than the {process_count} "
            "process(es) reading it."
        )
    return source


def _read_in_parallel(
    ds: grain.MapDataset, data: ml_collections.ConfigDict, batch_size: int
) -> grain.IterDataset:
    """Reads with `data.num_threads` threads, in `data.num_workers` processes when > 0, in order."""
    buffer = max(1, data.prefetch) * batch_size
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads, prefetch_buffer_size=buffer))
    if data.num_workers > 0:
        if not flags.FLAGS.is_parsed():
            # Grain's worker processes read absl flags; outside an absl program (notebooks, tests)
            # nothing parses them, so take their defaults instead of failing in every worker.
            flags.FLAGS.mark_as_parsed()
        per_worker = max(1, buffer // data.num_workers)
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=data.num_workers, per_worker_buffer_size=per_worker)
        )
    return ds


def _check_normalization(data: ml_collections.ConfigDict) -> None:
    """Fails before any worker starts when data.mean / data.std do not match data.channels."""
    for key in ("mean", "std"):
        values: Sequence[float] = tuple(data[key])
        if len(values) != data.channels:
            raise ValueError(
                f"data.{key} has {len(values)} value(s) but data.channels={data.channels}; give one "
                "value per band (`python -m rejepa_jax.stats` prints them)."
            )
