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

import math
from collections.abc import Sequence

import grain
import ml_collections
from absl import flags

from rejepa_jax.data.bad_records import SkipBadIterDataset
from rejepa_jax.data.errors import DataError
from rejepa_jax.data.record_transforms import EvalTransform, TrainTransform
from rejepa_jax.data.sources import Source, make_source
from rejepa_jax.data.stream_padding import PadIterDataset
from rejepa_jax.masking import MaskSampler


def view_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The view settings that shape a train batch (`state.batch_shapes` keywords)."""
    local_views = config.data.local_views
    return {
        "global_views": config.data.global_views,
        "local_views": local_views,
        "local_size": config.data.local_size if local_views else 0,
    }


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
    _check_normalisation(data)
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
    _check_normalisation(data)
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


def _check_normalisation(data: ml_collections.ConfigDict) -> None:
    """Fails before any worker starts when data.mean / data.std do not match data.channels."""
    for key in ("mean", "std"):
        values: Sequence[float] = tuple(data[key])
        if len(values) != data.channels:
            raise ValueError(
                f"data.{key} has {len(values)} value(s) but data.channels={data.channels}; give one "
                "value per band (`python -m rejepa_jax.stats` prints them)."
            )
