r"""Converts an image folder or a BigEarthNet archive into a tfds ArrayRecord dataset (no TensorFlow).

    python -m rejepa_jax.prepare --root DIR --out DATA_DIR --name NAME \
        [--split train=a.csv,b.csv --split test=c.csv] [--split_dir DIR] [--skip_bad] \
        [--max_image_pixels N]

Without --split, every image under --root becomes the split "train". Train on the result with
`--config.data.source=tfds --config.data.tfds_name=NAME --config.data.tfds_data_dir=DATA_DIR` and
a tfds split string per split (e.g. `--config.data.train_split=train`).

    python -m rejepa_jax.prepare --bigearthnet_root BigEarthNet-v1.0 --sensor s2 \
        --bands B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12 --labels 19 \
        --split train=train --split validation=validation --split test=test --out DATA_DIR --name ben_s2

writes BigEarthNet patch folders (the `data.bigearthnet` options as flags; --split NAME=LIST names a
dataset split and its BigEarthNet split names among train, validation, test, all; --split_dir a
folder of train.csv, val.csv, test.csv instead of the official lists). Without --split, the three
official splits. Each patch is stored as the stacked bands the folder reader gives (float32 .npy)
with its float32 multi-hot label: read it with `data.source=tfds`, `data.multi_label=True`,
`data.num_classes` the label count and `data.channels` the band count.

Every file is decoded once to check it: unreadable files, files larger than --max_image_pixels
values (height x width x bands, from the header) and files holding NaN or infinite values fail the
run with their name, or are skipped and listed with --skip_bad.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from rejepa_jax.data import array_record_dataset
from rejepa_jax.data.bigearthnet import DEFAULT_BANDS, SENSORS, BigEarthNetOptions
from rejepa_jax.data.decode_options import DEFAULT_MAX_IMAGE_PIXELS

_ROOT = flags.DEFINE_string("root", None, "Image folder: class sub-folders or flat.")
_BIGEARTHNET_ROOT = flags.DEFINE_string(
    "bigearthnet_root", None, "BigEarthNet folder of patch folders (instead of --root)."
)
_SENSOR = flags.DEFINE_enum("sensor", "s2", SENSORS, "BigEarthNet: the sensor of the patch folders.")
_BANDS = flags.DEFINE_list(
    "bands", [], "BigEarthNet: bands to stack, in order (default: the sensor's, as data.bigearthnet.bands)."
)
_LABELS = flags.DEFINE_enum("labels", "19", ["19", "43"], "BigEarthNet: 19- or 43-class labels.")
_EXCLUDE_CLOUD_SHADOW = flags.DEFINE_bool(
    "exclude_cloud_shadow", True, "BigEarthNet: drop patches with clouds or cloud shadows."
)
_EXCLUDE_SEASONAL_SNOW = flags.DEFINE_bool(
    "exclude_seasonal_snow", True, "BigEarthNet: drop patches with seasonal snow."
)
_SUBSET_PER_SPLIT = flags.DEFINE_integer(
    "subset_per_split", 0, "BigEarthNet: keep the first N sorted names of each split list (0: all)."
)
_OUT = flags.DEFINE_string("out", None, "tfds data_dir to write the dataset into.", required=True)
_NAME = flags.DEFINE_string(
    "name", None, "tfds dataset name, lower_snake_case (optionally '/config').", required=True
)
_SPLIT = flags.DEFINE_multi_string(
    "split",
    [],
    "NAME=CSV[,CSV...]: a split and its CSV files (a 'Filename' column relative to --root); with "
    "--bigearthnet_root, NAME=SPLIT[,SPLIT...] with BigEarthNet split names.",
)
_SPLIT_DIR = flags.DEFINE_string(
    "split_dir",
    "",
    "Folder of the split CSVs and label_map.json (default --root); BigEarthNet: of train.csv, val.csv, "
    "test.csv (default: the official lists).",
)
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip (and report) unreadable files instead of failing.")
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels",
    DEFAULT_MAX_IMAGE_PIXELS,
    "Largest file accepted, in values (height x width x bands), as data.max_image_pixels; 0: no limit.",
)


def parse_splits(specs: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
    """['train=a.csv,b.csv', 'test=c.csv'] -> {'train': ('a.csv', 'b.csv'), 'test': ('c.csv',)}."""
    if not specs:
        return None
    splits = {}
    for spec in specs:
        name, has_files, files = spec.partition("=")
        csv_files = tuple(part.strip() for part in files.split(",") if part.strip())
        if not has_files or not name.strip() or not csv_files:
            raise app.UsageError(f"--split {spec!r}: expected NAME=CSV[,CSV...].")
        if name.strip() in splits:
            raise app.UsageError(f"--split {name.strip()!r} is given twice.")
        splits[name.strip()] = csv_files
    return splits


def bigearthnet_options() -> BigEarthNetOptions:
    """The BigEarthNet options the flags give (invalid ones raise a UsageError)."""
    try:
        return BigEarthNetOptions(
            sensor=_SENSOR.value,
            bands=tuple(_BANDS.value) or DEFAULT_BANDS[_SENSOR.value],
            labels=int(_LABELS.value),
            exclude_cloud_shadow=_EXCLUDE_CLOUD_SHADOW.value,
            exclude_seasonal_snow=_EXCLUDE_SEASONAL_SNOW.value,
            subset_per_split=_SUBSET_PER_SPLIT.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e).replace("data.bigearthnet.", "--")) from e


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if (_ROOT.value is None) == (_BIGEARTHNET_ROOT.value is None):
        raise app.UsageError("Give exactly one of --root (an image folder) and --bigearthnet_root.")
    if _ROOT.value is not None:
        result = array_record_dataset.write_folder_dataset(
            _ROOT.value,
            _OUT.value,
            _NAME.value,
            parse_splits(_SPLIT.value),
            split_dir=_SPLIT_DIR.value,
            skip_bad=_SKIP_BAD.value,
            max_image_pixels=_MAX_IMAGE_PIXELS.value,
        )
    else:
        result = array_record_dataset.write_bigearthnet_dataset(
            _BIGEARTHNET_ROOT.value,
            _OUT.value,
            _NAME.value,
            parse_splits(_SPLIT.value),
            bigearthnet_options(),
            split_dir=_SPLIT_DIR.value,
            skip_bad=_SKIP_BAD.value,
            max_image_pixels=_MAX_IMAGE_PIXELS.value,
        )
    for split, count in result.num_examples.items():
        skipped = result.skipped[split]
        print(f"{split}: {count} examples" + (f", {len(skipped)} bad file(s) skipped" if skipped else ""))
        for message in skipped:
            logging.warning("Skipped: %s", message)
    print(f"Wrote {result.path}")


def run() -> None:
    """Console-script entry point (`rejepa-prepare`)."""
    app.run(main)


if __name__ == "__main__":
    run()
