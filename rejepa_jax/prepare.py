r"""Converts an image folder into a tfds ArrayRecord dataset (no TensorFlow needed).

    python -m rejepa_jax.prepare --root DIR --out DATA_DIR --name NAME \
        [--split train=a.csv,b.csv --split test=c.csv] [--split_dir DIR] [--skip_bad] \
        [--max_image_pixels N]

Without --split, every image under --root becomes the split "train". Train on the result with
`--config.data.source=tfds --config.data.tfds_name=NAME --config.data.tfds_data_dir=DATA_DIR` and
a tfds split string per split (e.g. `--config.data.train_split=train`).

Every file is decoded once to check it: unreadable files, files larger than --max_image_pixels
values (height x width x bands, from the header) and files holding NaN or infinite values fail the
run with their name, or are skipped and listed with --skip_bad.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging

from rejepa_jax.data import array_record_dataset
from rejepa_jax.data.decode import DEFAULT_MAX_IMAGE_PIXELS

_ROOT = flags.DEFINE_string("root", None, "Image folder: class sub-folders or flat.", required=True)
_OUT = flags.DEFINE_string("out", None, "tfds data_dir to write the dataset into.", required=True)
_NAME = flags.DEFINE_string(
    "name", None, "tfds dataset name, lower_snake_case (optionally '/config').", required=True
)
_SPLIT = flags.DEFINE_multi_string(
    "split", [], "NAME=CSV[,CSV...]: a split and its CSV files (a 'Filename' column relative to --root)."
)
_SPLIT_DIR = flags.DEFINE_string(
    "split_dir", "", "Folder of the split CSVs and label_map.json (default --root)."
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


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    result = array_record_dataset.write_folder_dataset(
        _ROOT.value,
        _OUT.value,
        _NAME.value,
        parse_splits(_SPLIT.value),
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
