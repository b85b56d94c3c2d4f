"""Random-access data sources (grain's `__len__` + `__getitem__` protocol) yielding plain dict records.

- `FolderSource`: image files under a root folder, optionally listed by split CSV files.
- `TfdsSource`: a tfds dataset read through `tfds.data_source` (ArrayRecord files, no TensorFlow).
- `BigEarthNetSource` (`bigearthnet.py`): BigEarthNet patch folders, one GeoTIFF per band.
- `SyntheticSource`: class-structured random images, deterministic per index, for smoke tests.

Sources only say where an image is (or hold it); decoding happens in the pipeline's map, so that a
decode error names the file and can be skipped there.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from rejepa_jax.data.band_resampling import stack_bands
from rejepa_jax.data.bigearthnet import BigEarthNetSource, make_bigearthnet_source
from rejepa_jax.data.errors import DataError, printable_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".npy")
LABEL_MAP_FILE = "label_map.json"
SOURCES = ("folder", "tfds", "synthetic", "bigearthnet")
SPLITS = ("train", "query", "archive")


class FolderSource:
    """Images under `root`: class sub-folders (label from the folder) or flat (label -1).

    Labels are the index of the class folder among the sorted folder names, unless a
    `label_map.json` (class name -> label) sits in `split_dir` or `root`. With `split_files`, the
    files listed in those CSVs (a `Filename` column relative to `root`, an optional integer `Label`
    column) are used in order, concatenated; otherwise every image under `root`, sorted. A CSV may
    not name a file outside `root` (an absolute path, or one leading out with '..').
    Records are `{"path": absolute path, "id": path relative to root, "label": int}`; a path that
    is not valid UTF-8 has an id with its undecodable bytes percent-encoded (`printable_name`), so
    that ids can be written (`prepare`, exported indexes) and printed.
    """

    def __init__(
        self,
        root: str,
        split_files: Sequence[str] = (),
        split_dir: str = "",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        self.root = os.path.abspath(root)
        self._given_root = root
        if not os.path.isdir(self.root):
            raise DataError(f"Image folder {printable_name(self.root)} (data.root) does not exist.")
        split_dir = os.path.join(self.root, split_dir) if split_dir else self.root
        extensions = tuple(e.lower() for e in extensions)
        self._label_map = _read_label_map(split_dir, self.root)
        if split_files:
            self._ids, self._labels = [], []
            for split_file in split_files:
                ids, labels = self._read_split_file(os.path.join(split_dir, split_file))
                self._ids += ids
                self._labels += labels
        else:
            self._ids = _scan(self.root, extensions)
            if not self._ids:
                resolved = "" if self._given_root == self.root else f" ({self.root})"
                raise DataError(
                    f"No images with extensions {extensions} found under data.root="
                    f"{printable_name(self._given_root)!r}{printable_name(resolved)} (hidden files and "
                    "folders are skipped); set data.root (--root for prepare) to the image folder."
                )
            self._labels = [self._folder_label(i, self.root) for i in self._ids]
        self._printable_ids = _printable_ids(self._ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names indexed by label, when the labels are exactly 0..K-1; () otherwise."""
        by_label = {label: printable_name(name) for name, label in self._label_map.items()}
        if sorted(by_label) != list(range(len(by_label))):
            return ()
        return tuple(by_label[i] for i in range(len(by_label)))

    @property
    def labels(self) -> tuple[int, ...]:
        """Every record's label, in record order."""
        return tuple(self._labels)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = os.path.join(self.root, self._ids[index])
        return {"path": path, "id": self.record_id(index), "label": self._labels[index]}

    def record_id(self, index: int) -> str:
        """The id of record `index` without reading it (its path relative to the root, printable)."""
        return self._printable_ids[index] if self._printable_ids else self._ids[index]

    def __repr__(self) -> str:
        return f"FolderSource(root={self.root!r}, num_records={len(self)})"

    def _read_split_file(self, path: str) -> tuple[list[str], list[int]]:
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                columns = reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"Cannot read split file {path}: {e}") from e
        if "Filename" not in columns:
            raise DataError(f"Split file {path} has no 'Filename' column (columns: {columns}).")
        if not rows:
            raise DataError(f"Split file {path} lists no images.")
        ids, labels = [], []
        for line, row in enumerate(rows, start=2):
            rel = os.path.normpath(row["Filename"] or "")
            if os.path.isabs(rel) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
                raise DataError(
                    f"{path}, line {line}: Filename {row['Filename']!r} is outside data.root "
                    f"({self.root}); a split CSV names files by their path relative to data.root, "
                    "without leading '/' or '..'."
                )
            if not os.path.isfile(os.path.join(self.root, rel)):
                raise DataError(
                    f"{path}, line {line}: {os.path.join(self.root, rel)} does not exist "
                    "(Filename is relative to data.root)."
                )
            raw_label = (row.get("Label") or "").strip()
            if not raw_label:
                labels.append(self._folder_label(rel, path))
            elif raw_label.lstrip("-").isdigit():
                labels.append(int(raw_label))
            else:
                raise DataError(f"{path}, line {line}: Label {raw_label!r} is not an integer.")
            ids.append(rel)
        return ids, labels

    def _folder_label(self, rel: str, where: str) -> int:
        """Label of the class folder holding `rel`, or -1 for an image directly under the root."""
        parts = rel.split(os.sep)
        if len(parts) == 1:
            return -1
        if parts[0] not in self._label_map:
            raise DataError(
                f"{where}: class folder {printable_name(parts[0])!r} of {printable_name(rel)} is not in the "
                "label map "
                f"{sorted(self._label_map)} ({LABEL_MAP_FILE} or the class folders of {self.root})."
            )
        return self._label_map[parts[0]]


def _printable_ids(ids: list[str]) -> list[str]:
    """Printable ids when some path is not valid UTF-8 ([] when all are); refuses colliding ids."""
    printable = [printable_name(i) for i in ids]
    if printable == ids:
        return []
    originals = set(ids)
    for original, escaped in zip(ids, printable, strict=True):
        if original != escaped and escaped in originals:
            raise DataError(
                f"The file name {escaped!r} (not valid UTF-8, shown percent-encoded) has the same id as "
                "another file named exactly so; rename one of them."
            )
    return printable


def _read_label_map(split_dir: str, root: str) -> dict[str, int]:
    """Reads label_map.json from split_dir, else root; else labels from the sorted class folders."""
    for folder in (split_dir, root):
        path = os.path.join(folder, LABEL_MAP_FILE)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    mapping = json.load(f)
                return {str(name): int(label) for name, label in mapping.items()}
            except (OSError, ValueError, AttributeError) as e:
                raise DataError(f"{path} must map class names to integer labels: {e}") from e
    folders = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    return {name: label for label, name in enumerate(folders)}


def _scan(root: str, extensions: tuple[str, ...]) -> list[str]:
    """Relative paths of every image under root (hidden entries skipped), sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


class TfdsSource:
    """A tfds dataset split read through `tfds.data_source` (ArrayRecord), without TensorFlow.

    Records are `{"image": array or encoded bytes, "id": "<split>:<index>", "label": ...}`; the
    label is -1 when `label_key` is empty. `image_key` may list several comma-separated features,
    one band each (e.g. BigEarthNet's "B01,B02,..."); they are stacked in that order. The tfds
    reader is opened lazily, so the source pickles cheaply into grain worker processes.
    """

    def __init__(
        self, name: str, split: str, data_dir: str = "", image_key: str = "image", label_key: str = "label"
    ):
        self.name = name
        self.split = split
        self.data_dir = data_dir
        self.image_keys = tuple(k.strip() for k in image_key.split(",") if k.strip())
        self.label_key = label_key
        self._reader = None
        features = self._open().dataset_info.features
        wanted = [(key, "data.image_key") for key in self.image_keys] + [(label_key, "data.label_key")]
        for key, flag in wanted:
            if key and key not in features:
                raise DataError(
                    f"tfds dataset {name!r} has no feature {key!r} ({flag}); features: {sorted(features)}."
                )

    def _open(self):
        if self._reader is None:
            import tensorflow_datasets as tfds  # Imported here: tfds is slow to import and rarely used.

            try:
                self._reader = tfds.data_source(
                    self.name, split=self.split, data_dir=self.data_dir or None, download=False
                )
            except Exception as e:  # tfds raises several types for a missing dataset or split.
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DataError(
                    f"Cannot open tfds dataset {self.name!r} (data.tfds_name), split {self.split!r}, in "
                    f"{self.data_dir or 'the default tfds data_dir'} (data.tfds_data_dir): {reason} "
                    "Prepare image folders with `python -m rejepa_jax.prepare`."
                ) from e
        return self._reader

    def __len__(self) -> int:
        return len(self._open())

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._open()[index]
        if len(self.image_keys) == 1:
            image = example[self.image_keys[0]]
        else:
            image = stack_bands([example[k] for k in self.image_keys], f"{self.name} {self.split}:{index}")
        return {
            "image": image,
            "id": self.record_id(index),
            "label": example[self.label_key] if self.label_key else -1,
        }

    def record_id(self, index: int) -> str:
        """The id of record `index` without reading it."""
        return f"{self.split}:{index}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}

    def __repr__(self) -> str:
        return f"TfdsSource(name={self.name!r}, split={self.split!r})"


class SyntheticSource:
    """Class-structured random images, deterministic per (seed, split, index), raw values in 0..255.

    Each class has its own per-band mean levels and its own stripe orientation and frequency, so
    both colour statistics and texture separate classes; per-example noise, phase and brightness
    make examples differ. Class patterns depend on `seed` only, so the splits share classes.
    Multi-label examples mix the patterns of 1-3 classes and carry a float32 multi-hot label.
    """

    def __init__(
        self,
        num_examples: int,
        image_size: int,
        channels: int,
        num_classes: int,
        multi_label: bool = False,
        seed: int = 0,
        split: str = "train",
    ):
        if num_examples < 1 or num_classes < 1 or channels < 1:
            raise DataError(
                "Synthetic data needs data.synthetic_size, data.num_classes and data.channels >= 1, got "
                f"{num_examples}, {num_classes} and {channels}."
            )
        self.num_examples = num_examples
        self.image_size = image_size
        self.channels = channels
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.split = split
        self._seed = (seed, zlib.crc32(split.encode()))
        class_rng = np.random.default_rng([seed, 0x5EED])
        self._levels = class_rng.uniform(40.0, 200.0, size=(num_classes, channels))
        self._angles = class_rng.uniform(0.0, np.pi, size=num_classes)
        self._frequencies = class_rng.uniform(2.0, 8.0, size=num_classes)  # Cycles per image.

    def __len__(self) -> int:
        return self.num_examples

    def record_id(self, index: int) -> str:
        """The id of record `index` without generating it."""
        return f"{self.split}:{index}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([*self._seed, index])
        if self.multi_label:
            count = min(int(rng.integers(1, 4)), self.num_classes)
            classes = rng.choice(self.num_classes, size=count, replace=False)
            label: Any = np.zeros(self.num_classes, np.float32)
            label[classes] = 1.0
        else:
            classes = np.array([index % self.num_classes])
            label = int(classes[0])
        size = self.image_size
        yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        image = np.zeros((size, size, self.channels))
        for c in classes:
            along = xx * np.cos(self._angles[c]) + yy * np.sin(self._angles[c])
            stripes = np.sin(2 * np.pi * self._frequencies[c] * along / size + rng.uniform(0, 2 * np.pi))
            image += self._levels[c] + 30.0 * stripes[:, :, None] * np.linspace(1.0, 0.5, self.channels)
        image = image / len(classes) * rng.uniform(0.9, 1.1) + rng.normal(0.0, 8.0, image.shape)
        return {
            "image": np.clip(image, 0.0, 255.0).astype(np.float32),
            "id": self.record_id(index),
            "label": label,
        }

    def __repr__(self) -> str:
        return f"SyntheticSource(split={self.split!r}, num_records={len(self)})"


Source = FolderSource | TfdsSource | SyntheticSource | BigEarthNetSource


def make_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
    """The source of `split` ("train", "query" or "archive") chosen by `data.source`.

    `data.<split>_split` is a comma-separated CSV list for folders ("" = every image), a tfds split
    string for tfds, the split name for synthetic data ("" = `split`), which sets its seed, and a
    comma-separated list of "train", "validation", "test", "all" for BigEarthNet.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    split_value = str(data_config[f"{split}_split"]).strip()
    if data_config.source == "folder":
        if not data_config.root:
            raise DataError("data.root is empty; set it to the image folder (data.source='folder').")
        split_files = tuple(part.strip() for part in split_value.split(",") if part.strip())
        return FolderSource(data_config.root, split_files=split_files, split_dir=data_config.split_dir)
    if data_config.source == "tfds":
        if not split_value:
            raise DataError(f"data.{split}_split is empty; set it to a tfds split such as 'train[:80%]'.")
        return TfdsSource(
            data_config.tfds_name,
            split_value,
            data_dir=data_config.tfds_data_dir,
            image_key=data_config.image_key,
            label_key=data_config.label_key,
        )
    if data_config.source == "bigearthnet":
        if not split_value:
            raise DataError(
                f"data.{split}_split is empty; set it to BigEarthNet split names such as 'train'."
            )
        return make_bigearthnet_source(data_config, split_value)
    if data_config.source == "synthetic":
        return SyntheticSource(
            data_config.synthetic_size,
            data_config.image_size,
            data_config.channels,
            data_config.num_classes,
            multi_label=data_config.multi_label,
            split=split_value or split,
        )
    raise ValueError(f"Unknown data.source={data_config.source!r}; valid values: {', '.join(SOURCES)}.")
