r"""Writes the EuroSAT-MS split CSVs: each GeoTIFF goes to the split of its EuroSAT RGB namesake.

The multispectral files are the same scenes as the RGB JPEGs of the same name (`Forest/Forest_1.tif`
is `Forest/Forest_1.jpg`), so the RGB protocol's fixed split carries over unchanged and the two
modalities are compared on the same queries:

- `archive.csv`: namesake in train.csv or validation.csv; `query.csv`: namesake in test.csv;
- `tune_archive.csv`: namesake in train.csv; `tune_query.csv`: namesake in validation.csv;
- `label_map.json`: the RGB label map (AnnualCrop = 0 ... SeaLake = 9).

Columns: `Filename` (relative to the EuroSAT-MS root) and `Label` (the RGB split's integer). A file
without an RGB namesake, or whose class folder disagrees with its namesake's label, is reported and
left out. Rows are sorted by class, then by the number in the file name.

    python benchmarks/eurosat_ms_splits.py --ms_root ../shared/data/eurosat_ms \
      --rgb_meta ../shared/data/eurosat_rgb_meta --out benchmarks/eurosat_ms_splits

On the 469 shared files (2026-12-05) every file has a namesake: archive 424, query 45, tune_archive
329, tune_query 95; none excluded. With `--sample_out rejepa_jax/sample_data/eurosat_ms` it also copies,
unchanged, the lowest-numbered archive file and query file of every class (20 files) into the
embedded sample and writes its `archive.csv`, `query.csv` and `label_map.json` (10 rows each).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path

MS_SUFFIXES = (".tif", ".tiff")
SPLITS = {
    "archive": ("train", "validation"),
    "query": ("test",),
    "tune_archive": ("train",),
    "tune_query": ("validation",),
}


def natural_key(filename: str) -> tuple[str, int, str]:
    """(class folder, number in the name, name): `Forest_2` sorts before `Forest_10`."""
    folder, _, name = filename.partition("/")
    number = re.search(r"(\d+)\D*$", name)
    return folder, int(number.group(1)) if number else -1, name


def read_rgb_splits(rgb_meta: Path) -> dict[str, tuple[str, int]]:
    """RGB file stem (`Forest/Forest_1`) -> (RGB split name, label)."""
    by_stem = {}
    for split in ("train", "validation", "test"):
        with open(rgb_meta / f"{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                by_stem[str(Path(row["Filename"]).with_suffix(""))] = (split, int(row["Label"]))
    return by_stem


def assign(
    ms_files: list[str], by_stem: dict[str, tuple[str, int]], label_map: dict[str, int]
) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """The (Filename, Label) rows of every split, and the files left out with the reason."""
    rows: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLITS}
    excluded = []
    for filename in sorted(ms_files, key=natural_key):
        match = by_stem.get(str(Path(filename).with_suffix("")))
        folder = filename.split("/")[0]
        if match is None:
            excluded.append(f"{filename}: no RGB namesake in the split CSVs")
            continue
        rgb_split, label = match
        if label_map.get(folder) != label:
            excluded.append(f"{filename}: folder {folder!r} but the RGB namesake has label {label}")
            continue
        for name, rgb_splits in SPLITS.items():
            if rgb_split in rgb_splits:
                rows[name].append((filename, label))
    return rows, excluded


def write_csv(path: Path, rows: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Filename", "Label"])
        writer.writerows(rows)


def write_sample(
    ms_root: Path, out: Path, rows: dict[str, list[tuple[str, int]]], label_map: dict[str, int]
) -> None:
    """Copies the first archive and query file of every class into `out`, with their CSVs."""
    for split in ("archive", "query"):
        firsts: dict[int, tuple[str, int]] = {}
        for filename, label in rows[split]:
            firsts.setdefault(label, (filename, label))
        picked = [firsts[label] for label in sorted(firsts)]
        for filename, _ in picked:
            (out / filename).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ms_root / filename, out / filename)
        write_csv(out / f"{split}.csv", picked)
    (out / "label_map.json").write_text(json.dumps(label_map, indent=4) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--ms_root", type=Path, required=True, help="EuroSAT-MS folder (class sub-folders)")
    parser.add_argument("--rgb_meta", type=Path, required=True, help="EuroSAT RGB split CSVs + label_map")
    parser.add_argument("--out", type=Path, required=True, help="folder for the split CSVs")
    parser.add_argument("--sample_out", type=Path, default=None, help="also write the embedded sample")
    args = parser.parse_args()

    label_map = json.loads((args.rgb_meta / "label_map.json").read_text())
    ms_files = [
        path.relative_to(args.ms_root).as_posix()
        for path in args.ms_root.rglob("*")
        if path.is_file() and path.suffix.lower() in MS_SUFFIXES
    ]
    rows, excluded = assign(ms_files, read_rgb_splits(args.rgb_meta), label_map)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split_rows in rows.items():
        write_csv(args.out / f"{name}.csv", split_rows)
    (args.out / "label_map.json").write_text(json.dumps(label_map, indent=4) + "\n")
    print(f"{len(ms_files)} files: " + ", ".join(f"{name} {len(r)}" for name, r in rows.items()))
    print(f"{len(excluded)} excluded" + "".join(f"\n  {line}" for line in excluded))
    if args.sample_out is not None:
        write_sample(args.ms_root, args.sample_out, rows, label_map)
        print(f"Sample written to {args.sample_out}.")


if __name__ == "__main__":
    main()
