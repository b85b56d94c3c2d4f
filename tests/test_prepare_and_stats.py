"""`prepare` (image folder -> tfds ArrayRecord, no TensorFlow) and `stats` (per-band mean/std)."""

from __future__ import annotations

import ast
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tifffile
from data_fixtures import PATCH_GRID, class_folder, folder_with_corrupt_files, small_config

from rejepa_jax.data import array_record_dataset, pipeline
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.errors import DataError
from rejepa_jax.data.sources import FolderSource, TfdsSource
from rejepa_jax.masking import MultiBlockMaskSampler
from rejepa_jax.stats import compute_statistics

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run_module(module: str, *args: str) -> str:
    """Runs `python -m module args` from the repository root; returns stdout, failing on errors."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _write_split(path: Path, filenames: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "Filename"])
        writer.writerows(enumerate(filenames))


@pytest.mark.slow
def test_prepare_round_trip_and_training_on_it(tmp_path):
    root, out = tmp_path / "images", tmp_path / "tfds"
    files = sorted(class_folder(root, {"crop": 4, "forest": 3, "river": 3}))
    _write_split(root / "train.csv", files[:7])
    _write_split(root / "test.csv", files[7:])
    stdout = _run_module(
        "rejepa_jax.prepare",
        f"--root={root}",
        f"--out={out}",
        "--name=mini_folder",
        "--split=train=train.csv",
        "--split=test=test.csv",
    )
    assert "train: 7 examples" in stdout and "test: 3 examples" in stdout
    assert sorted(os.listdir(out)) == ["mini_folder"]  # No temporary folder is left behind.

    expected = FolderSource(str(root), split_files=("train.csv",))
    train = tfds.data_source("mini_folder", split="train", data_dir=str(out))
    assert len(train) == 7
    assert train.dataset_info.features["label"].names == ["crop", "forest", "river"]
    for i in range(7):
        record = expected[i]
        assert train[i]["image"] == Path(record["path"]).read_bytes()
        assert train[i]["label"] == record["label"]
        assert train[i]["filename"].decode() == record["id"]

    source = TfdsSource("mini_folder", "test", data_dir=str(out))
    np.testing.assert_array_equal(
        decode_record(source[0], channels=3),
        decode_record({"path": str(root / files[7])}, channels=3),
    )
    config = small_config(
        source="tfds",
        tfds_name="mini_folder",
        tfds_data_dir=str(out),
        train_split="train",
        query_split="test",
    )
    sampler = MultiBlockMaskSampler.from_config(config.masks, PATCH_GRID)
    batch = next(pipeline.make_train_iterator(config, sampler))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["target_idx"].dtype == np.int32
    query = next(pipeline.make_eval_iterator(config, "query", 4))
    assert query["id"].tolist() == ["test:0", "test:1", "test:2", ""]
    assert query["label"][:3].tolist() == [2, 2, 2]
    assert "tensorflow" not in sys.modules  # Reading and training needed no TensorFlow.


def test_prepare_bad_file_fails_atomically_or_is_skipped(tmp_path):
    root, out = tmp_path / "images", tmp_path / "tfds"
    folder_with_corrupt_files(root, total=6, bad_indices=(1, 4))
    with pytest.raises(DataError, match=r"img_001\.jpg.*--skip_bad"):
        array_record_dataset.write_folder_dataset(str(root), str(out), "with_bad")
    assert os.listdir(out) == []  # Neither a partial dataset nor the temporary folder remains.

    result = array_record_dataset.write_folder_dataset(str(root), str(out), "with_bad", skip_bad=True)
    assert result.num_examples == {"train": 4}
    assert [re.search(r"img_\d+\.jpg", m).group() for m in result.skipped["train"]] == [
        "img_001.jpg",
        "img_004.jpg",
    ]
    readback = tfds.data_source("with_bad", split="train", data_dir=str(out))
    assert [readback[i]["filename"].decode() for i in range(4)] == [
        "img_000.png",
        "img_002.png",
        "img_003.png",
        "img_005.png",
    ]
    assert readback[0]["label"] == -1  # A flat folder has no classes.
    with pytest.raises(FileExistsError, match="already exists"):
        array_record_dataset.write_folder_dataset(str(root), str(out), "with_bad", skip_bad=True)


def test_prepare_writes_non_utf8_file_names_as_printable_ids(tmp_path):
    root, out = tmp_path / "images", tmp_path / "tfds"
    class_folder(root, {"a": 2})
    raw_name = os.path.join(os.fsencode(root / "a"), b"\xff\xfebad name.jpg")  # Not valid UTF-8.
    with open(raw_name, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError, match=r"a/%FF%FEbad name\.jpg.*--skip_bad") as info:
        array_record_dataset.write_folder_dataset(str(root), str(out), "odd_names")
    str(info.value).encode("utf-8")  # The message itself can be printed.

    with open(raw_name, "wb") as f:
        f.write(Path(root / "a" / "a_000.png").read_bytes())
    array_record_dataset.write_folder_dataset(str(root), str(out), "odd_names")
    written = tfds.data_source("odd_names", split="train", data_dir=str(out))
    assert [written[i]["filename"].decode() for i in range(3)] == [
        "a/a_000.png",
        "a/a_001.png",
        "a/%FF%FEbad name.jpg",  # Sorted by the name's bytes: 0xFF after ASCII.
    ]
    assert written[2]["image"] == written[0]["image"]


def test_prepare_rejects_bad_names(tmp_path):
    class_folder(tmp_path / "images", {"a": 1})
    for name in ("Bad-Name", "mnist"):
        with pytest.raises(ValueError, match=name):
            array_record_dataset.write_folder_dataset(str(tmp_path / "images"), str(tmp_path / "out"), name)


def _multispectral_folder(root: Path) -> list[np.ndarray]:
    """Four 5-band uint16 GeoTIFFs of different sizes, with very different band levels."""
    rng = np.random.default_rng(0)
    cubes = []
    for i, size in enumerate((8, 12, 9, 16)):
        cube = (rng.normal(size=(size, size, 5)) * [10, 200, 3, 1000, 50] + [100, 3000, 20, 30000, 500]).clip(
            0
        )
        cubes.append(cube.astype(np.uint16))
        root.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / f"tile_{i}.tif", cubes[-1], photometric="minisblack", planarconfig="contig")
    return cubes


@pytest.mark.slow
def test_stats_cli_matches_numpy(tmp_path):
    cubes = _multispectral_folder(tmp_path / "tiles")
    config_file = tmp_path / "ms_config.py"
    config_file.write_text(
        "from rejepa_jax import config_lib\n\n\n"
        "def get_config(arg=None):\n"
        "    c = config_lib.base_config()\n"
        f"    c.data.root = {str(tmp_path / 'tiles')!r}\n"
        "    c.data.channels = 3\n"
        "    c.data.bands = (3, 0, 4)\n"
        "    c.lock()\n"
        "    return c\n"
    )
    stdout = _run_module("rejepa_jax.stats", f"--config={config_file}", "--config.data.num_threads=1")
    pixels = np.concatenate([c[:, :, [3, 0, 4]].reshape(-1, 3) for c in cubes]).astype(np.float64)
    mean_flag, std_flag = re.findall(r"--config\.data\.(?:mean|std)=(\([^)]*\))", stdout)
    np.testing.assert_allclose(ast.literal_eval(mean_flag), pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(ast.literal_eval(std_flag), pixels.std(0), atol=1e-3)
    assert "4 images" in stdout


def test_compute_statistics_skips_bad_and_honours_max_images(tmp_path):
    folder_with_corrupt_files(tmp_path, total=8, bad_indices=(2, 5))
    config = small_config(tmp_path, skip_bad=True)
    stats, skipped = compute_statistics(config.data)
    source = FolderSource(str(tmp_path))
    good = [decode_record(source[i], 3) for i in range(8) if i not in (2, 5)]
    pixels = np.concatenate([g.reshape(-1, 3) for g in good]).astype(np.float64)
    assert (stats.num_images, skipped) == (6, 2)
    np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, pixels.std(0), rtol=1e-12)

    first_three, skipped = compute_statistics(config.data, max_images=3)
    assert (first_three.num_images, skipped) == (2, 1)
    config.data.skip_bad = False
    with pytest.raises(DataError, match=r"img_002\.jpg"):
        compute_statistics(config.data)
