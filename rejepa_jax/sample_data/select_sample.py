"""Rebuilds the embedded EuroSAT RGB sample from a full EuroSAT RGB copy.

Usage: python rejepa_jax/sample_data/select_sample.py EUROSAT_RGB_DIR EUROSAT_META_DIR

Picks, per class and with a fixed seed, 80 archive images from the official train + validation
split and 20 query images from the test split, copies them unchanged and writes `archive.csv`,
`query.csv` and `label_map.json` beside them, in the column layout of the EuroSAT split files.
"""

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ARCHIVE_PER_CLASS = 80
QUERY_PER_CLASS = 20
SEED = 0


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _pick(rows: list[dict[str, str]], per_class: int, rng: np.random.Generator) -> list[dict]:
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in sorted(rows, key=lambda r: r["Filename"]):
        by_class.setdefault(row["ClassName"], []).append(row)
    picked = []
    for name in sorted(by_class):
        choice = rng.choice(len(by_class[name]), size=per_class, replace=False)
        picked.extend(by_class[name][i] for i in sorted(choice))
    return picked


def main(image_root: str, meta_root: str) -> None:
    image_root_path, meta = Path(image_root), Path(meta_root)
    out = Path(__file__).resolve().parent / "eurosat_rgb"
    rng = np.random.default_rng(SEED)
    archive_rows = _read_rows(meta / "train.csv") + _read_rows(meta / "validation.csv")
    splits = {
        "archive": _pick(archive_rows, ARCHIVE_PER_CLASS, rng),
        "query": _pick(_read_rows(meta / "test.csv"), QUERY_PER_CLASS, rng),
    }
    for split, rows in splits.items():
        with (out / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "Filename", "Label", "ClassName"])
            for i, row in enumerate(rows):
                writer.writerow([i, row["Filename"], row["Label"], row["ClassName"]])
                target = out / row["Filename"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image_root_path / row["Filename"], target)
    shutil.copyfile(meta / "label_map.json", out / "label_map.json")
    json.loads((out / "label_map.json").read_text())  # Fails loudly on a damaged copy.


if __name__ == "__main__":
    main(*sys.argv[1:3])
