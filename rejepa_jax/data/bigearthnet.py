"""BigEarthNet as distributed: one folder per patch, one GeoTIFF per band, a JSON of labels.

    <root>/<patch>/<patch>_B02.tif ... <patch>_labels_metadata.json

Sentinel-2 (`sensor="s2"`): uint16 reflectance x 10,000, B02, B03, B04, B08 at 10 m (120 x 120),
B05, B06, B07, B8A, B11, B12 at 20 m (60 x 60), B01, B09 at 60 m (20 x 20); no B10. Sentinel-1
(`sensor="s1"`): VV and VH, float32 backscatter in dB, 120 x 120. Labels are 43-class CORINE names,
read as BigEarthNet-19's 19 classes (the official 43 -> 19 map) or as the 43.

`BigEarthNetSource` only lists patches and says where their files are; the band files are read,
checked and resampled in the pipeline's map (`decode.decode_band_files`), and the labels read there
too (`read_patch_labels`), so that a bad patch is named and can be skipped and counted
(`data.skip_bad`). Splits come from the official lists of `bigearthnet-common` (S2 patch names;
`bigearthnet_lists`) or from a folder of the same lists (`data.split_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from rejepa_jax.data import bigearthnet_lists
from rejepa_jax.data.errors import DataError, printable_name

# The embedded sample: 4 real patches from each sensor (BigEarthNet-S2-Example, BigEarthNet-S1-Example).
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "bigearthnet"
SENSORS = ("s2", "s1")
# Native grid (pixels per side of a 1.2 km patch) of every band file a patch may hold.
S2_BAND_SIZES = {
    "B01": 20,
    "B02": 120,
    "B03": 120,
    "B04": 120,
    "B05": 60,
    "B06": 60,
    "B07": 60,
    "B08": 120,
    "B8A": 60,
    "B09": 20,
    "B11": 60,
    "B12": 60,
}
S1_BAND_SIZES = {"VV": 120, "VH": 120}
BAND_SIZES = {"s2": S2_BAND_SIZES, "s1": S1_BAND_SIZES}
# The bands read when none are named: S2's 10 m and 20 m bands (the 60 m ones are atmospheric), S1's two.
DEFAULT_BANDS = {
    "s2": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    "s1": ("VV", "VH"),
}
LABEL_SETS = (19, 43)
# `data.*_split` names: the official lists, and "all" (every patch folder under the root).
SPLIT_NAMES = ("train", "validation", "test", "all")
# The files of a custom `data.split_dir`, named as the package's lists.
SPLIT_DIR_FILES = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}
LABELS_SUFFIX = "_labels_metadata.json"


@dataclasses.dataclass(frozen=True)
class BigEarthNetOptions:
    """The `data.bigearthnet` block: which sensor, bands and labels, and which patches to drop."""

    sensor: str = "s2"
    bands: tuple[str, ...] = DEFAULT_BANDS["s2"]
    labels: int = 19
    exclude_cloud_shadow: bool = True
    exclude_seasonal_snow: bool = True
    subset_per_split: int = 0

    def __post_init__(self) -> None:
        if self.sensor not in SENSORS:
            raise ValueError(f"data.bigearthnet.sensor must be one of {SENSORS}, got {self.sensor!r}.")
        valid = BAND_SIZES[self.sensor]
        unknown = [b for b in self.bands if b not in valid]
        if not self.bands or unknown or len(set(self.bands)) != len(self.bands):
            raise ValueError(
                f"data.bigearthnet.bands={self.bands} must name distinct {self.sensor.upper()} bands among "
                f"{tuple(valid)}" + (f"; unknown: {unknown}." if unknown else ".")
            )
        if self.labels not in LABEL_SETS:
            raise ValueError(f"data.bigearthnet.labels must be 19 or 43, got {self.labels!r}.")
        if self.subset_per_split < 0:
            raise ValueError(f"data.bigearthnet.subset_per_split must be >= 0, got {self.subset_per_split}.")

    @classmethod
    def from_config(cls, data_config: ml_collections.ConfigDict) -> BigEarthNetOptions:
        """The options of `data.bigearthnet`, checked against the rest of `data`."""
        block = data_config.bigearthnet
        options = cls(
            sensor=str(block.sensor),
            bands=tuple(str(b) for b in block.bands),
            labels=int(block.labels),
            exclude_cloud_shadow=bool(block.exclude_cloud_shadow),
            exclude_seasonal_snow=bool(block.exclude_seasonal_snow),
            subset_per_split=int(block.subset_per_split),
        )
        if data_config.channels != len(options.bands):
            raise ValueError(
                f"data.channels={data_config.channels} but data.bigearthnet.bands names "
                f"{len(options.bands)} band(s) {options.bands}; set data.channels={len(options.bands)}."
            )
        if tuple(data_config.bands):
            raise ValueError(
                f"data.bands={tuple(data_config.bands)} selects bands by index, which BigEarthNet does by "
                "name: leave data.bands empty and list the bands in data.bigearthnet.bands."
            )
        if not data_config.multi_label or data_config.num_classes != options.labels:
            raise ValueError(
                f"BigEarthNet labels are multi-label over data.bigearthnet.labels={options.labels} classes: "
                f"set data.multi_label=True and data.num_classes={options.labels} (found "
                f"{data_config.multi_label} and {data_config.num_classes})."
            )
        return options

    @property
    def band_sizes(self) -> tuple[int, ...]:
        return tuple(BAND_SIZES[self.sensor][b] for b in self.bands)


class BigEarthNetSource:
    """The patches of `splits` under `root` (patch folders of one sensor), in sorted S2-name order.

    `splits` are names among "train", "validation", "test" (the official lists, or `split_dir`'s
    `train.csv`, `val.csv`, `test.csv`, one S2 name per line; a relative `split_dir` is taken from
    `root`, as for image folders) and "all" (every patch folder under `root`). Each list is an
    S2 patch list: for Sentinel-1 each S2 name is mapped to its S1 folder (the package's S1 <-> S2
    pairing, else the `corresponding_s2_patch` of the folder's JSON, read only for folders the
    pairing does not know), so S1 and S2 sources of one split list the same places in the same
    order. Then, by S2 name: patches with clouds or shadows and with seasonal snow are dropped when
    the options say so (an S1 patch when its S2 partner is), and with 19 labels the patches with no
    19-class label; each list is sorted, cut to its first `subset_per_split` names (0: all) and the
    lists concatenated. A listed patch without a folder under `root` is an error.

    Records: {"band_paths", "band_shapes" (native height, width per band), "labels_path",
    "label_set" (19 or 43), "id" (the patch folder's name)}. `excluded` counts the dropped patches
    per reason (also logged).
    """

    def __init__(
        self,
        root: str,
        splits: Sequence[str],
        options: BigEarthNetOptions | None = None,
        split_dir: str = "",
    ):
        self.root = os.path.abspath(root)
        self.options = options or BigEarthNetOptions()
        self.splits = tuple(splits)
        self.split_dir = split_dir
        if not os.path.isdir(self.root):
            raise DataError(f"BigEarthNet folder {printable_name(self.root)} (data.root) does not exist.")
        unknown = [s for s in self.splits if s not in SPLIT_NAMES]
        if not self.splits or unknown:
            raise ValueError(
                f"BigEarthNet splits are a comma-separated list of {SPLIT_NAMES}; got {self.splits}."
            )
        bigearthnet_lists.old_to_new_labels()  # A missing package fails here, not in the pipeline.
        folders = _patch_folders(self.root, self.options.sensor)  # S2 name -> folder name.
        drop = self._exclusions()
        self.excluded: dict[str, int] = dict.fromkeys(drop, 0)
        names: list[str] = []
        for split in self.splits:
            listed = sorted(folders) if split == "all" else self._split_list(split)
            kept = []
            for s2_name in listed:
                reason = next((r for r, patches in drop.items() if s2_name in patches), None)
                if reason is None:
                    kept.append(s2_name)
                else:
                    self.excluded[reason] += 1
            if self.options.subset_per_split:
                kept = kept[: self.options.subset_per_split]
            names += kept
        if len(set(names)) != len(names):
            raise DataError(f"The BigEarthNet splits {self.splits} share patches; list each patch once.")
        missing = [n for n in names if n not in folders]
        if missing:
            raise DataError(
                f"{len(missing)} of the {len(names)} patches of split(s) {self.splits} have no "
                f"{self.options.sensor.upper()} folder under data.root={self.root} (first: {missing[0]}); "
                "is data.root the archive folder holding the patch folders, for data.bigearthnet.sensor="
                f"{self.options.sensor!r}?"
            )
        self._names = tuple(folders[n] for n in names)
        logging.info(
            "BigEarthNet %s %s: %d patches, excluded %s.",
            self.options.sensor,
            self.splits,
            len(self),
            self.excluded,
        )

    def _exclusions(self) -> dict[str, frozenset[str]]:
        """Reason -> the S2 patch names dropped for it, as the options ask."""
        drop = {}
        if self.options.exclude_cloud_shadow:
            drop["cloud_shadow"] = bigearthnet_lists.cloud_and_shadow_patches()
        if self.options.exclude_seasonal_snow:
            drop["seasonal_snow"] = bigearthnet_lists.seasonal_snow_patches()
        if self.options.labels == 19:
            drop["no_19_class"] = bigearthnet_lists.no_19_class_patches()
        return drop

    def _split_list(self, split: str) -> list[str]:
        if not self.split_dir:
            return list(bigearthnet_lists.official_split(split))
        path = os.path.join(self.root, self.split_dir, SPLIT_DIR_FILES[split])
        try:
            with open(path) as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"Cannot read the BigEarthNet split list {path} (data.split_dir): {e}") from e
        if not names:
            raise DataError(f"The BigEarthNet split list {path} names no patch.")
        return sorted(names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names indexed like the multi-hot labels (19 or 43 classes)."""
        if self.options.labels == 19:
            return bigearthnet_lists.labels_19()
        return bigearthnet_lists.labels_43()

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self._names[index]
        folder = os.path.join(self.root, name)
        sizes = self.options.band_sizes
        return {
            "band_paths": tuple(os.path.join(folder, f"{name}_{band}.tif") for band in self.options.bands),
            "band_shapes": tuple((size, size) for size in sizes),
            "labels_path": os.path.join(folder, name + LABELS_SUFFIX),
            "label_set": self.options.labels,
            "id": name,
        }

    def record_id(self, index: int) -> str:
        """The id of record `index` without reading it: its patch folder's name."""
        return self._names[index]

    def __repr__(self) -> str:
        return (
            f"BigEarthNetSource(root={self.root!r}, sensor={self.options.sensor!r}, splits={self.splits}, "
            f"num_records={len(self)})"
        )


def make_bigearthnet_source(data_config: ml_collections.ConfigDict, split_value: str) -> BigEarthNetSource:
    """The source of a `data.*_split` value (comma-separated split names) under `data.root`."""
    if not data_config.root:
        raise DataError("data.root is empty; set it to the BigEarthNet folder of patch folders.")
    splits = tuple(part.strip() for part in split_value.split(",") if part.strip())
    return BigEarthNetSource(
        data_config.root,
        splits,
        BigEarthNetOptions.from_config(data_config),
        split_dir=data_config.split_dir,
    )


def read_patch_labels(path: str, label_set: int) -> np.ndarray:
    """The float32 multi-hot labels of a patch's label JSON, over 19 or 43 classes.

    The JSON's `labels` are 43-class CORINE names; with 19 classes they are mapped with the official
    43 -> 19 map, and a patch none of whose labels has a 19-class counterpart is a DataError ("no
    19-class label"), so that `data.skip_bad` counts it instead of keeping an unlabelled patch.
    """
    name = printable_name(path)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"Missing label file {name}.") from e
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read the label file {name}: {e}") from e
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{name} has no 'labels' list of class names.")
    old_to_new = bigearthnet_lists.old_to_new_labels()
    unknown = [x for x in labels if x not in old_to_new]
    if unknown:
        raise DataError(f"{name}: labels {unknown} are not BigEarthNet's 43 class names.")
    if label_set == 43:
        classes, kept = bigearthnet_lists.labels_43(), labels
    elif label_set == 19:
        classes = bigearthnet_lists.labels_19()
        kept = [old_to_new[x] for x in labels if old_to_new[x] is not None]
        if not kept:
            raise DataError(f"{name}: no 19-class label (its labels {labels} have no 19-class counterpart).")
    else:
        raise ValueError(f"label_set must be 19 or 43, got {label_set!r}.")
    multi_hot = np.zeros(len(classes), np.float32)
    multi_hot[[classes.index(x) for x in kept]] = 1.0
    return multi_hot


def _patch_folders(root: str, sensor: str) -> dict[str, str]:
    """S2 patch name -> patch folder name, for every patch folder under `root` (hidden ones skipped).

    S2 folders are named by their S2 name. An S1 folder's S2 partner comes from the package's
    pairing, else from the `corresponding_s2_patch` of its label JSON.
    """
    try:
        with os.scandir(root) as entries:
            folders = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise DataError(f"Cannot list the BigEarthNet folder {root} (data.root): {e}") from e
    if sensor == "s2":
        return {name: name for name in folders}
    pairing = bigearthnet_lists.s1_to_s2_names()
    result = {}
    for name in folders:
        s2_name = pairing.get(name) or _corresponding_s2_patch(os.path.join(root, name, name + LABELS_SUFFIX))
        result[s2_name] = name
    return result


def _corresponding_s2_patch(path: str) -> str:
    """The S2 partner named in an S1 patch's label JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            s2_name = json.load(f).get("corresponding_s2_patch")
    except (OSError, ValueError, AttributeError) as e:
        raise DataError(f"Cannot read the S2 partner of an S1 patch from {printable_name(path)}: {e}") from e
    if not isinstance(s2_name, str) or not s2_name:
        raise DataError(f"{printable_name(path)} names no 'corresponding_s2_patch'.")
    return s2_name
