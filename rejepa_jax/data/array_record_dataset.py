"""Writes an image folder or a BigEarthNet archive as a tfds ArrayRecord dataset, without TensorFlow.

Image folders: each example keeps the original encoded file bytes (JPEG, PNG, GeoTIFF, .npy: nothing
is re-encoded or rounded), its integer label and its file name relative to the root. BigEarthNet:
each patch becomes its stacked bands exactly as `BigEarthNetSource` decodes them (float32 [120, 120,
C] on the 10 m grid, raw units, as .npy bytes: 576 KB for 10 bands), its float32 multi-hot label
(19 or 43 classes) and its patch name. The image and file name are
`tfds.features.Tensor(shape=(), dtype=np.object_)` byte strings, which tfds serialises with its own
protos; `tfds.features.Image` would need TensorFlow to encode. The result is read with
`tfds.data_source(name, data_dir=out_dir)`, hence by `TfdsSource` (with `data.multi_label=True` for
BigEarthNet).

Every file is decoded once before it is written, so a corrupt file, one larger than
`max_image_pixels` values (checked from its header) or one holding NaN or infinite values in any
band fails the run with its name (or is skipped and reported with `skip_bad`). File names that are
not valid UTF-8 are stored percent-encoded (`errors.printable_name`). The dataset is built in a
temporary folder next to its destination and moved into place only when complete, so a failed run
never leaves a partial one.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming

from rejepa_jax.data.bigearthnet import BigEarthNetOptions, BigEarthNetSource, read_patch_labels
from rejepa_jax.data.decode import check_finite, decode_record
from rejepa_jax.data.decode_options import DEFAULT_MAX_IMAGE_PIXELS, DecodeOptions
from rejepa_jax.data.errors import DataError, ImageTooLargeError, printable_name
from rejepa_jax.data.image_formats import decode_file
from rejepa_jax.data.sources import FolderSource

VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """What `write_folder_dataset` wrote: where, how many examples per split, which files it skipped."""

    path: str
    num_examples: dict[str, int]
    skipped: dict[str, list[str]]


class _IteratorBuilder(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
    """An AdhocBuilder fed with (key, example) iterators.

    AdhocBuilder's own `_split_generators` first checks for `tf.data.Dataset` inputs, which imports
    TensorFlow; iterators need no such check. `code_path` (where tfds looks for download checksums)
    is None: the dataset has no code folder, and tfds' lookup of one in an installed package needs
    `importlib_resources`, which tfds does not install.
    """

    code_path = None

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager
        return dict(self._split_datasets)


def write_folder_dataset(
    root: str,
    out_dir: str,
    name: str,
    splits: Mapping[str, Sequence[str]] | None = None,
    *,
    split_dir: str = "",
    skip_bad: bool = False,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedDataset:
    """Writes the images under `root` as tfds dataset `name` (or `name/config`) in `out_dir`.

    `splits` maps a split name to its CSV files (see `FolderSource`); None writes every image under
    `root` as the single split "train". `max_image_pixels` is `data.max_image_pixels`'s limit for
    the files (0: none). Returns the dataset folder and per-split counts.
    """
    options = DecodeOptions(max_image_pixels=max_image_pixels)
    _check_name(name.partition("/")[0], name)
    splits = dict(splits) if splits is not None else {"train": ()}
    if not splits:
        raise DataError("No split to write.")
    sources = {
        split: FolderSource(root, split_files=files, split_dir=split_dir) for split, files in splits.items()
    }
    skipped: dict[str, list[str]] = {split: [] for split in sources}
    final_path = _write(
        out_dir,
        name,
        _features(sources.values()),
        {split: _examples(source, skip_bad, skipped[split], options) for split, source in sources.items()},
        description=f"Image folder {os.path.abspath(root)} written by rejepa_jax.prepare.",
    )
    num_examples = {split: len(source) - len(skipped[split]) for split, source in sources.items()}
    return PreparedDataset(path=final_path, num_examples=num_examples, skipped=skipped)


def write_bigearthnet_dataset(
    root: str,
    out_dir: str,
    name: str,
    splits: Mapping[str, Sequence[str]] | None = None,
    options: BigEarthNetOptions | None = None,
    *,
    split_dir: str = "",
    skip_bad: bool = False,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedDataset:
    """Writes the BigEarthNet patch folders under `root` as tfds dataset `name` in `out_dir`.

    `splits` maps a dataset split name to BigEarthNet split names ("train", "validation", "test",
    "all"; see `BigEarthNetSource`, with `options` and `split_dir`); None writes the three official
    splits under their own names. A patch that fails to decode or whose labels cannot be read fails
    the run naming its file, or is skipped and listed with `skip_bad`.
    """
    options = options or BigEarthNetOptions()
    decode_options = DecodeOptions(max_image_pixels=max_image_pixels)
    _check_name(name.partition("/")[0], name)
    splits = dict(splits) if splits is not None else {s: (s,) for s in ("train", "validation", "test")}
    if not splits:
        raise DataError("No split to write.")
    sources = {
        split: BigEarthNetSource(root, names, options, split_dir=split_dir) for split, names in splits.items()
    }
    skipped: dict[str, list[str]] = {split: [] for split in sources}
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.Tensor(shape=(options.labels,), dtype=np.float32),
            "filename": tfds.features.Tensor(shape=(), dtype=np.object_),
        }
    )
    classes = next(iter(sources.values())).class_names
    final_path = _write(
        out_dir,
        name,
        features,
        {
            split: _patch_examples(source, skip_bad, skipped[split], decode_options)
            for split, source in sources.items()
        },
        description=(
            f"BigEarthNet {options.sensor.upper()} patches of {os.path.abspath(root)}, bands "
            f"{', '.join(options.bands)} stacked on the 10 m grid (float32 .npy, raw units), written by "
            f"rejepa_jax.prepare. Labels: multi-hot over {options.labels} classes: {'; '.join(classes)}."
        ),
    )
    num_examples = {split: len(source) - len(skipped[split]) for split, source in sources.items()}
    return PreparedDataset(path=final_path, num_examples=num_examples, skipped=skipped)


def _write(
    out_dir: str,
    name: str,
    features: tfds.features.FeaturesDict,
    split_datasets: dict[str, Iterator[tuple[int, dict]]],
    *,
    description: str,
) -> str:
    """Builds the dataset in a temporary folder and moves it into place when complete; its path."""
    dataset_name, _, config_name = name.partition("/")
    final_path = os.path.join(os.path.abspath(out_dir), dataset_name, config_name, VERSION)
    if os.path.exists(final_path):
        raise FileExistsError(f"{final_path} already exists; remove it or choose another --name.")
    os.makedirs(out_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{dataset_name}-incomplete-", dir=out_dir)
    try:
        builder = _IteratorBuilder(
            name=dataset_name,
            version=VERSION,
            config=config_name or None,
            features=features,
            split_datasets=split_datasets,
            data_dir=tmp_dir,
            description=description,
            file_format="array_record",
            disable_shuffling=True,  # Keep the source order: example i is the source's i-th record.
        )
        builder.download_and_prepare(
            download_dir=os.path.join(tmp_dir, "downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            file_format="array_record",
        )
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        os.rename(builder.data_dir, final_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_path


def _check_name(dataset_name: str, name: str) -> None:
    if not naming.is_valid_dataset_name(dataset_name):
        raise ValueError(f"--name {name!r}: a tfds name is lower_snake_case, optionally '/config'.")
    if dataset_name in tfds.list_builders(with_community_datasets=False):
        raise ValueError(
            f"--name {name!r} is a tfds catalog dataset, whose reader would take precedence over the "
            "prepared files; choose another name."
        )


def _features(sources: Sequence[FolderSource]) -> tfds.features.FeaturesDict:
    """Labels are a ClassLabel (keeping the class names) when every label indexes the class list."""
    class_names = next(iter(sources)).class_names
    labels_in_range = all(0 <= label < len(class_names) for source in sources for label in source.labels)
    if class_names and labels_in_range:
        label_feature = tfds.features.ClassLabel(names=class_names)
    else:
        label_feature = tfds.features.Tensor(shape=(), dtype=np.int64)
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": label_feature,
            "filename": tfds.features.Tensor(shape=(), dtype=np.object_),
        }
    )


def _examples(
    source: FolderSource, skip_bad: bool, skipped: list[str], options: DecodeOptions
) -> Iterator[tuple[int, dict]]:
    """(index, example) for each readable file; a bad file raises, or is appended to `skipped`."""
    for index in range(len(source)):
        record = source[index]
        name = printable_name(record["path"])
        try:
            try:
                with open(record["path"], "rb") as f:
                    check_finite(decode_file(f, name, options), name)  # The header's size first.
                    f.seek(0)
                    data = f.read()
            except OSError as e:
                raise DataError(f"Cannot read {name}: {e}") from e
        except DataError as e:
            if not skip_bad:
                limit = (
                    " (prepare's limit is --max_image_pixels)" if isinstance(e, ImageTooLargeError) else ""
                )
                raise DataError(f"{e}{limit} (pass --skip_bad to skip and count bad files)") from e
            skipped.append(str(e))
            continue
        yield index, {"image": data, "label": record["label"], "filename": record["id"]}


def _patch_examples(
    source: BigEarthNetSource, skip_bad: bool, skipped: list[str], options: DecodeOptions
) -> Iterator[tuple[int, dict]]:
    """(index, example) for each readable patch; a bad one raises, or is appended to `skipped`."""
    channels = len(source.options.bands)
    for index in range(len(source)):
        record = source[index]
        try:
            image = decode_record(record, channels, options=options)
            label = read_patch_labels(record["labels_path"], record["label_set"])
        except DataError as e:
            if not skip_bad:
                raise DataError(f"{e} (pass --skip_bad to skip and count bad patches)") from e
            skipped.append(str(e))
            continue
        buffer = io.BytesIO()
        np.save(buffer, image, allow_pickle=False)
        yield index, {"image": buffer.getvalue(), "label": label, "filename": record["id"]}
