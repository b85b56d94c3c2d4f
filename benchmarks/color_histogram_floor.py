"""Reproduces the colour-histogram retrieval floor on the full EuroSAT RGB protocol.

Archive = train + validation (24,300 images), queries = test (2,700 images), relevance = same class,
exact cosine search on the square-rooted 8×8×8 RGB histogram. The shared data README quotes
mAP@20 = 0.767 (normalised by R_K, i.e. `map@20/retrieved`) and P@20 = 0.685 for this descriptor.

Ties matter at the third decimal: about a thousand archive images share their histogram with another
one (near-uniform scenes fall into a single bin), so ~120 queries have equal scores across the rank-20
cut. Ordering equal scores by the lower archive index (our rule) gives P@20 0.6858; the opposite
order gives 0.6849, and the extremes (relevant items first / last) span 0.680-0.688.

    .venv/bin/python -m benchmarks.color_histogram_floor [--data-dir ../shared/data]   # from the repo root
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from rejepa_jax.evaluation.retrieval_metrics import NORMALISATIONS, retrieval_report
from rejepa_jax.retrieval.color_histogram import color_histogram
from rejepa_jax.retrieval.exact_search import exact_search

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (5, 10, 20, 100)
EXPECTED = {"map@20/retrieved": 0.767, "p@20": 0.685}
BATCH = 512


def read_split(meta_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
    with open(meta_dir / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["Filename"] for r in rows], np.array([int(r["Label"]) for r in rows], dtype=np.int64)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def describe(image_dir: Path, files: list[str], bins: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """Descriptors batch by batch, so only one batch of decoded images is held at a time."""
    parts = []
    for start in range(0, len(files), BATCH):
        images = np.stack(list(pool.map(load_rgb, (image_dir / f for f in files[start : start + BATCH]))))
        parts.append(color_histogram(images, bins=bins))
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--bins", type=int, default=8)
    args = parser.parse_args()
    image_dir, meta_dir = args.data_dir / "eurosat_rgb", args.data_dir / "eurosat_rgb_meta"

    archive_files, archive_labels = [], []
    for split in ("train", "validation"):
        files, labels = read_split(meta_dir, split)
        archive_files += files
        archive_labels.append(labels)
    archive_labels = np.concatenate(archive_labels)
    query_files, query_labels = read_split(meta_dir, "test")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        archive_desc = describe(image_dir, archive_files, args.bins, pool)
        query_desc = describe(image_dir, query_files, args.bins, pool)
    t1 = time.perf_counter()
    # Filenames as ids: the splits are disjoint, so leave-one-out must exclude nothing here.
    report = retrieval_report(
        query_desc,
        query_labels,
        archive_desc,
        archive_labels,
        KS,
        multi_label=False,
        query_ids=query_files,
        archive_ids=archive_files,
    )
    t2 = time.perf_counter()
    scores, _ = exact_search(query_desc, archive_desc, 21)
    boundary_ties = int((scores[:, 19] == scores[:, 20]).sum())

    print(f"archive {len(archive_files)} images, queries {len(query_files)} images, bins {args.bins}")
    print(f"descriptors {t1 - t0:.1f} s, search + metrics {t2 - t1:.1f} s")
    header = ["K", "P@K", "R@K"] + [f"mAP@K/{n}" for n in NORMALISATIONS] + ["NDCG@K"]
    print(" ".join(f"{h:>16}" for h in header))
    for k in KS:
        keys = [f"p@{k}", f"r@{k}"] + [f"map@{k}/{n}" for n in NORMALISATIONS] + [f"ndcg@{k}"]
        print(f"{k:>16} " + " ".join(f"{report[key]:>16.4f}" for key in keys))
    for key, value in EXPECTED.items():
        print(f"{key}: measured {report[key]:.4f}, README {value:.3f}, diff {report[key] - value:+.4f}")
    print(f"queries whose 20th and 21st results tie in score: {boundary_ties}")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
