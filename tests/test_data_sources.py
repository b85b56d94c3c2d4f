"""Folder scanning, CSV splits, label maps, synthetic data and source selection from the config."""

from __future__ import annotations

import csv
import json
import os
import re
import urllib.parse

import numpy as np
import pytest
from data_fixtures import class_folder, random_rgb, small_config, write_png
from PIL import Image

from rejepa_jax import config_lib
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.errors import DataError
from rejepa_jax.data.sources import FolderSource, SyntheticSource, make_source


def _write_csv(path, rows, columns=("index", "Filename", "Label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def test_class_subfolders_get_sorted_folder_labels(tmp_path):
    class_folder(tmp_path, {"forest": 2, "beach": 3, "city": 1})
    (tmp_path / "forest" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "forest" / ".hidden.png", random_rgb(0))
    source = FolderSource(str(tmp_path))
    records = [source[i] for i in range(len(source))]
    assert len(source) == 6
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert {r["id"].split(os.sep)[0]: r["label"] for r in records} == {"beach": 0, "city": 1, "forest": 2}
    assert all(os.path.isabs(r["path"]) and r["path"].endswith(r["id"]) for r in records)
    assert source.class_names == ("beach", "city", "forest")


def test_flat_folder_has_label_minus_one(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"scene_{i}.png", random_rgb(i))
    source = FolderSource(str(tmp_path))
    assert [source[i]["label"] for i in range(3)] == [-1, -1, -1]
    assert [source[i]["id"] for i in range(3)] == ["scene_0.png", "scene_1.png", "scene_2.png"]


def test_label_map_json_sets_labels(tmp_path):
    class_folder(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "label_map.json").write_text(json.dumps({"b": 0, "a": 1}))
    source = FolderSource(str(tmp_path))
    assert {source[i]["id"]: source[i]["label"] for i in range(2)} == {"a/a_000.png": 1, "b/b_000.png": 0}
    assert source.class_names == ("b", "a")


def test_csv_splits_are_concatenated_in_listed_order(tmp_path):
    class_folder(tmp_path, {"a": 3, "b": 3})
    splits = tmp_path / "splits"
    splits.mkdir()
    # The first CSV gives explicit labels; the second has none, so labels come from the folders.
    _write_csv(splits / "one.csv", [(0, "b/b_002.png", 7), (1, "a/a_000.png", 5)])
    _write_csv(splits / "two.csv", [(0, "a/a_001.png"), (1, "b/b_000.png")], columns=("index", "Filename"))
    source = FolderSource(str(tmp_path), split_files=("one.csv", "two.csv"), split_dir="splits")
    assert [source[i]["id"] for i in range(len(source))] == [
        "b/b_002.png",
        "a/a_000.png",
        "a/a_001.png",
        "b/b_000.png",
    ]
    assert source.labels == (7, 5, 0, 1)


def test_embedded_sample_split_matches_its_csv():
    source = FolderSource(config_lib.SAMPLE_ROOT, split_files=("archive.csv",))
    with open(os.path.join(config_lib.SAMPLE_ROOT, "archive.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(source) == len(rows) == 800
    assert [source[i]["id"] for i in range(len(source))] == [r["Filename"] for r in rows]
    assert list(source.labels) == [int(r["Label"]) for r in rows]
    assert np.bincount(source.labels).tolist() == [80] * 10


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match=str(tmp_path)):
        FolderSource(str(tmp_path))


def test_empty_folder_error_names_the_data_root_key_and_value(tmp_path):
    (tmp_path / "empty_class").mkdir()
    config = small_config(tmp_path / "empty_class" / "..")
    with pytest.raises(DataError, match=re.escape(f"data.root='{tmp_path}/empty_class/..' ({tmp_path})")):
        make_source(config.data, "train")


def test_csv_naming_a_file_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    class_folder(root, {"a": 1})
    write_png(tmp_path / "outside.png", random_rgb(0))
    (root / "b").mkdir()
    for i, name in enumerate((str(tmp_path / "outside.png"), "../outside.png", "b/../../outside.png")):
        _write_csv(root / f"split{i}.csv", [(0, "a/a_000.png", 0), (1, name, 0)])
        with pytest.raises(
            DataError, match=rf"split{i}\.csv, line 3: Filename '{re.escape(name)}' is outside"
        ):
            FolderSource(str(root), split_files=(f"split{i}.csv",))
    _write_csv(root / "inside.csv", [(0, "b/../a/a_000.png", 0)])
    assert FolderSource(str(root), split_files=("inside.csv",))[0]["id"] == "a/a_000.png"


def test_file_names_that_are_not_utf8_get_lossless_printable_ids(tmp_path):
    raw_name = b"caf\xe9 100%.png"  # Latin-1: not valid UTF-8.
    with open(os.path.join(os.fsencode(tmp_path), raw_name), "wb") as f:
        Image.fromarray(random_rgb(1)).save(f, format="PNG")
    write_png(tmp_path / "plain 100%.png", random_rgb(2))
    source = FolderSource(str(tmp_path))
    ids = [source[i]["id"] for i in range(len(source))]
    assert ids == ["caf%E9 100%25.png", "plain 100%.png"]  # Only the undecodable name is escaped.
    assert source.record_id(0) == ids[0]
    ids[0].encode("utf-8")  # Printable and writable.
    assert urllib.parse.unquote_to_bytes(ids[0]) == raw_name
    np.testing.assert_array_equal(decode_record(source[0], 3), random_rgb(1))


def test_csv_naming_a_missing_file_is_an_error_naming_both(tmp_path):
    class_folder(tmp_path, {"a": 1})
    _write_csv(tmp_path / "split.csv", [(0, "a/a_000.png", 0), (1, "a/missing.png", 0)])
    with pytest.raises(DataError, match=r"split\.csv, line 3: .*a/missing\.png does not exist"):
        FolderSource(str(tmp_path), split_files=("split.csv",))


def test_bad_split_files_are_errors(tmp_path):
    class_folder(tmp_path, {"a": 1})
    _write_csv(tmp_path / "empty.csv", [])
    _write_csv(tmp_path / "no_filename.csv", [("a/a_000.png",)], columns=("path",))
    _write_csv(tmp_path / "named_label.csv", [(0, "a/a_000.png", "forest")])
    with pytest.raises(DataError, match="empty.csv lists no images"):
        FolderSource(str(tmp_path), split_files=("empty.csv",))
    with pytest.raises(DataError, match="no 'Filename' column"):
        FolderSource(str(tmp_path), split_files=("no_filename.csv",))
    with pytest.raises(DataError, match="named_label.csv, line 2: Label 'forest' is not an integer"):
        FolderSource(str(tmp_path), split_files=("named_label.csv",))
    with pytest.raises(DataError, match="absent.csv"):
        FolderSource(str(tmp_path), split_files=("absent.csv",))


def test_synthetic_is_deterministic_and_split_dependent():
    train = SyntheticSource(20, 16, 5, 4, seed=0, split="train")
    again = SyntheticSource(20, 16, 5, 4, seed=0, split="train")
    query = SyntheticSource(20, 16, 5, 4, seed=0, split="query")
    first = train[3]
    assert first["image"].shape == (16, 16, 5) and first["image"].dtype == np.float32
    assert first["image"].min() >= 0.0 and first["image"].max() <= 255.0
    np.testing.assert_array_equal(first["image"], again[3]["image"])
    assert not np.array_equal(first["image"], query[3]["image"])
    assert first["id"] == "train:3" and first["label"] == 3


def test_synthetic_classes_separate_by_mean_colour():
    """A nearest-class-mean rule on per-band means, fitted on one split, classifies another."""
    train = SyntheticSource(80, 16, 3, 4, split="archive")
    query = SyntheticSource(40, 16, 3, 4, split="query")

    def features(source):
        return np.stack([source[i]["image"].mean(axis=(0, 1)) for i in range(len(source))])

    train_labels = np.array([train[i]["label"] for i in range(len(train))])
    centroids = np.stack([features(train)[train_labels == c].mean(0) for c in range(4)])
    query_features = features(query)
    predicted = np.argmin(((query_features[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = np.mean(predicted == np.array([query[i]["label"] for i in range(len(query))]))
    assert accuracy > 0.8


def test_synthetic_multi_label_is_multi_hot_with_one_to_three_labels():
    source = SyntheticSource(30, 8, 2, 6, multi_label=True)
    labels = np.stack([source[i]["label"] for i in range(len(source))])
    assert labels.dtype == np.float32 and labels.shape == (30, 6)
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert labels.sum(1).min() >= 1 and labels.sum(1).max() <= 3


def test_make_source_picks_by_config(tmp_path):
    class_folder(tmp_path, {"a": 2, "b": 2})
    _write_csv(tmp_path / "x.csv", [(0, "a/a_000.png", 0)])
    _write_csv(tmp_path / "y.csv", [(0, "b/b_001.png", 1)])
    config = small_config(tmp_path, train_split="x.csv, y.csv", query_split="")
    assert len(make_source(config.data, "train")) == 2
    assert len(make_source(config.data, "query")) == 4  # "" = every image under the root.

    config.data.source = "synthetic"
    config.data.synthetic_size = 7
    config.data.train_split = ""  # Synthetic: "" is the split's own name.
    config.data.archive_split = "train"  # The archive may be the train split itself.
    train, archive = make_source(config.data, "train"), make_source(config.data, "archive")
    assert len(train) == 7
    np.testing.assert_array_equal(train[0]["image"], archive[0]["image"])
    assert not np.array_equal(train[0]["image"], make_source(config.data, "query")[0]["image"])

    config.data.source = "webdataset"
    with pytest.raises(ValueError, match=r"data\.source='webdataset'.*folder, tfds, synthetic"):
        make_source(config.data, "train")
