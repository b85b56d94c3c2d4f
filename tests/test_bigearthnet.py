"""The BigEarthNet reader on the embedded real patches: bands, resampling, labels, splits, bad patches."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tifffile
from helpers import CONFIGS
from PIL import Image

from rejepa_jax import config_lib
from rejepa_jax.data import bigearthnet_lists, pipeline
from rejepa_jax.data.array_record_dataset import write_bigearthnet_dataset
from rejepa_jax.data.band_resampling import resize_bilinear
from rejepa_jax.data.bigearthnet import (
    SAMPLE_DIR,
    BigEarthNetOptions,
    BigEarthNetSource,
    read_patch_labels,
)
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.errors import BadImageError, DataError
from rejepa_jax.data.sources import TfdsSource, make_source
from rejepa_jax.stats import compute_statistics

S2_ROOT = SAMPLE_DIR / "BigEarthNet-S2-Example"
S1_ROOT = SAMPLE_DIR / "BigEarthNet-S1-Example"
SNOWY = "S2B_MSIL2A_20180204T94161_57_38"
S2_NAMES = (  # Sorted; the sample's patches without seasonal snow.
    "S2A_MSIL2A_20170613T101031_87_48",
    "S2A_MSIL2A_20171221T112501_56_35",
    "S2B_MSIL2A_20170924T93020_69_24",
)
S1_OF_S2 = {
    "S2A_MSIL2A_20170613T101031_87_48": "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48",
    "S2A_MSIL2A_20171221T112501_56_35": "S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35",
    "S2B_MSIL2A_20170924T93020_69_24": "S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24",
    SNOWY: "S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38",
}
S1_OPTIONS = BigEarthNetOptions(sensor="s1", bands=("VV", "VH"))


def _band(root: Path, name: str, band: str) -> np.ndarray:
    return tifffile.imread(root / name / f"{name}_{band}.tif")


def _config(sensor: str = "s2", root: Path | None = None, **bigearthnet) -> ml_collections.ConfigDict:
    """The runlocal config of the sensor, unlocked, over `root` (default: the sample)."""
    config = config_lib.load_config_file(f"{CONFIGS}/bigearthnet_{sensor}.py:runlocal")
    config.unlock()
    if root is not None:
        config.data.root = str(root)
    for key, value in bigearthnet.items():
        config.data.bigearthnet[key] = value
    return config


def _eval_rows(config: ml_collections.ConfigDict, split: str = "archive") -> dict[str, np.ndarray]:
    batches = list(pipeline.make_eval_iterator(config, split, 4))
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _copy_patch(src_root: Path, name: str, dst_root: Path, new_name: str) -> Path:
    """A copy of patch `name` as `new_name` (folder and file prefixes renamed)."""
    folder = dst_root / new_name
    folder.mkdir(parents=True)
    for path in (src_root / name).iterdir():
        shutil.copyfile(path, folder / path.name.replace(name, new_name))
    return folder


# ---- Bands: order, values, resampling ----


def test_s2_bands_keep_their_order_and_values_and_coarse_bands_are_resampled_by_hand():
    name = S2_NAMES[0]
    source = BigEarthNetSource(S2_ROOT, ("all",), BigEarthNetOptions(bands=("B04", "B05", "B02", "B01")))
    record = source[0]
    assert record["id"] == name
    image = decode_record(record, channels=4)
    assert image.shape == (120, 120, 4) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, :, 0], _band(S2_ROOT, name, "B04"))  # 10 m: exact.
    np.testing.assert_array_equal(image[:, :, 2], _band(S2_ROOT, name, "B02"))
    b05 = _band(S2_ROOT, name, "B05").astype(np.float64)  # 60 x 60 (20 m).
    assert b05.shape == (60, 60)
    # Output pixel i samples x = (i + 0.5) / 2 - 0.5: row 5 -> 2.25, column 8 -> 3.75.
    interior = 0.75 * (0.25 * b05[2, 3] + 0.75 * b05[2, 4]) + 0.25 * (0.25 * b05[3, 3] + 0.75 * b05[3, 4])
    assert image[5, 8, 1] == pytest.approx(interior, rel=1e-6)
    assert image[0, 0, 1] == b05[0, 0] and image[119, 119, 1] == b05[59, 59]  # Corners: clamped.
    assert image[0, 8, 1] == pytest.approx(0.25 * b05[0, 3] + 0.75 * b05[0, 4], rel=1e-6)  # Top edge.
    b01 = _band(S2_ROOT, name, "B01").astype(np.float64)  # 20 x 20 (60 m): x = (i + 0.5) / 6 - 0.5.
    assert b01.shape == (20, 20)
    # Row 9 -> 1.0833 (1 + 1/12), column 3 -> 0.0833 (1/12).
    row1 = (11 / 12) * b01[1, 0] + (1 / 12) * b01[1, 1]
    row2 = (11 / 12) * b01[2, 0] + (1 / 12) * b01[2, 1]
    assert image[9, 3, 3] == pytest.approx((11 / 12) * row1 + (1 / 12) * row2, rel=1e-6)
    # The default is the 10 m and 20 m bands, in BigEarthNet's order.
    default = decode_record(BigEarthNetSource(S2_ROOT, ("all",))[0], channels=10)
    assert default.shape == (120, 120, 10)
    np.testing.assert_array_equal(default[:, :, 6], _band(S2_ROOT, name, "B08"))
    np.testing.assert_array_equal(default[:, :, 3], image[:, :, 1])


def test_pil_bilinear_upsampling_equals_the_half_pixel_definition():
    # `stack_bands` (tfds band features) used PIL; PIL's BILINEAR upsampling is the same definition.
    for band, size in (("B05", 60), ("B01", 20)):
        coarse = _band(S2_ROOT, S2_NAMES[1], band).astype(np.float32)
        assert coarse.shape == (size, size)
        pil = np.asarray(Image.fromarray(coarse, mode="F").resize((120, 120), Image.BILINEAR))
        np.testing.assert_allclose(resize_bilinear(coarse, (120, 120)), pil, rtol=3e-7)  # float32 rounding.


def test_s1_patch_reads_vv_and_vh_in_db():
    source = BigEarthNetSource(S1_ROOT, ("all",), S1_OPTIONS)
    image = decode_record(source[0], channels=2)
    name = S1_OF_S2[S2_NAMES[0]]
    assert source.record_id(0) == name and image.shape == (120, 120, 2)
    np.testing.assert_array_equal(image[:, :, 0], _band(S1_ROOT, name, "VV"))
    np.testing.assert_array_equal(image[:, :, 1], _band(S1_ROOT, name, "VH"))
    assert image.max() < 20.0 and np.median(image[:, :, 1]) < np.median(image[:, :, 0]) < 0.0  # dB.


# ---- Labels ----

# The sample's JSON labels, mapped by hand (19: official order; 43: original order).
EXPECTED_19 = {
    # Non-irrigated arable land -> Arable land; Land principally occupied by agriculture, ...
    S2_NAMES[0]: [2, 6],
    # Complex cultivation patterns; Land principally ...; Broad-leaved forest; Transitional woodland/shrub.
    S2_NAMES[1]: [5, 6, 8, 13],
    # Coniferous, Mixed forest; Transitional ...; Peatbogs -> Inland wetlands; Water bodies -> Inland waters.
    S2_NAMES[2]: [9, 10, 13, 15, 17],
}
EXPECTED_43 = {S2_NAMES[0]: [11, 20], S2_NAMES[1]: [19, 20, 22, 28], S2_NAMES[2]: [23, 24, 28, 34, 39]}


def _multi_hot(indices: list[int], size: int) -> np.ndarray:
    out = np.zeros(size, np.float32)
    out[indices] = 1.0
    return out


def test_19_class_labels_of_the_sample_through_the_eval_pipeline():
    rows = _eval_rows(_config())
    assert rows["id"][rows["valid"]].tolist() == list(S2_NAMES)
    for name, label in zip(rows["id"][:3], rows["label"][:3], strict=True):
        np.testing.assert_array_equal(label, _multi_hot(EXPECTED_19[name], 19))
    assert make_source(_config().data, "archive").class_names[2] == "Arable land"


def test_43_class_labels_and_their_nomenclature():
    for name, indices in EXPECTED_43.items():
        path = S2_ROOT / name / f"{name}_labels_metadata.json"
        np.testing.assert_array_equal(read_patch_labels(str(path), 43), _multi_hot(indices, 43))
        names = json.loads(path.read_text())["labels"]
        assert [bigearthnet_lists.labels_43()[i] for i in indices] == names
    config = _config(labels=43)
    config.data.num_classes = 43
    rows = _eval_rows(config)
    assert rows["label"].shape == (4, 43)  # 3 patches and a padding row.
    np.testing.assert_array_equal(rows["label"][0], _multi_hot(EXPECTED_43[S2_NAMES[0]], 43))
    source = make_source(config.data, "query")
    assert len(source.class_names) == 43 and source.class_names[34] == "Peatbogs"


# ---- Official lists and nomenclature from bigearthnet-common ----


def test_official_lists_sizes_exclusions_and_nomenclature():
    sizes = {s: len(bigearthnet_lists.official_split(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 269_695, "validation": 123_723, "test": 125_866}
    splits = [bigearthnet_lists.official_split_set(s) for s in ("train", "validation", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    cloud, snow = bigearthnet_lists.cloud_and_shadow_patches(), bigearthnet_lists.seasonal_snow_patches()
    no_19 = bigearthnet_lists.no_19_class_patches()
    # No header line: every entry is a patch name, and the counts are BigEarthNet's.
    assert (len(cloud), len(snow), len(no_19)) == (9_280, 61_707, 57)
    assert all(n.startswith(("S2A_MSIL2A_", "S2B_MSIL2A_")) for n in cloud | snow | no_19)
    for split in splits:
        assert not split & cloud and not split & snow and not split & no_19
    assert SNOWY in snow and S2_NAMES[0] in splits[2] and S2_NAMES[1] in splits[0]
    old_to_new = bigearthnet_lists.old_to_new_labels()
    assert len(bigearthnet_lists.labels_43()) == 43 and len(bigearthnet_lists.labels_19()) == 19
    assert set(old_to_new.values()) - {None} == set(bigearthnet_lists.labels_19())
    assert sum(v is None for v in old_to_new.values()) == 11
    assert bigearthnet_lists.s1_to_s2_names()[S1_OF_S2[SNOWY]] == SNOWY


# ---- Splits: custom lists, exclusions, subsets, S1 pairing ----


def _split_dir(folder: Path, **lists: list[str]) -> Path:
    """A split_dir holding the package's file names, CRLF lines as the package's lists."""
    folder.mkdir()
    for split, names in lists.items():
        (folder / f"{split}.csv").write_text("\r\n".join(names) + "\r\n")
    return folder


def test_split_dir_lists_are_honoured_sorted_and_excluded(tmp_path):
    split_dir = _split_dir(
        tmp_path / "splits", train=[S2_NAMES[2], S2_NAMES[1]], val=[S2_NAMES[0]], test=[SNOWY, S2_NAMES[0]]
    )
    train = BigEarthNetSource(S2_ROOT, ("train",), split_dir=str(split_dir))
    assert [train.record_id(i) for i in range(len(train))] == [S2_NAMES[1], S2_NAMES[2]]
    test = BigEarthNetSource(S2_ROOT, ("test",), split_dir=str(split_dir))
    assert len(test) == 1 and test.excluded["seasonal_snow"] == 1
    both = BigEarthNetSource(S2_ROOT, ("validation", "train"), split_dir=str(split_dir))
    assert [both.record_id(i) for i in range(3)] == [S2_NAMES[0], S2_NAMES[1], S2_NAMES[2]]
    with pytest.raises(DataError, match="share patches"):
        BigEarthNetSource(S2_ROOT, ("all", "train"), split_dir=str(split_dir))
    # The official lists name patches this folder lacks: an error, not a silent subset.
    with pytest.raises(DataError, match=r"269693 of the 269695 patches .*no S2 folder"):
        BigEarthNetSource(S2_ROOT, ("train",))


def test_the_snowy_patch_is_excluded_from_all_unless_asked():
    default = BigEarthNetSource(S2_ROOT, ("all",))
    assert len(default) == 3 and SNOWY not in [default.record_id(i) for i in range(3)]
    assert default.excluded == {"cloud_shadow": 0, "seasonal_snow": 1, "no_19_class": 0}
    kept = BigEarthNetSource(S2_ROOT, ("all",), BigEarthNetOptions(exclude_seasonal_snow=False))
    assert [kept.record_id(i) for i in range(4)] == sorted([*S2_NAMES, SNOWY])
    # A pickled source is small (no reader, no file contents) and the same.
    restored = pickle.loads(pickle.dumps(kept))
    assert len(pickle.dumps(kept)) < 2000 and restored[3] == kept[3]


def test_subset_per_split_keeps_the_first_sorted_names(tmp_path):
    split_dir = _split_dir(
        tmp_path / "splits", train=[S2_NAMES[2], S2_NAMES[0], S2_NAMES[1]], val=[S2_NAMES[2]]
    )
    options = BigEarthNetOptions(subset_per_split=2)
    source = BigEarthNetSource(S2_ROOT, ("train", "validation"), options, split_dir=str(split_dir))
    assert [source.record_id(i) for i in range(len(source))] == [S2_NAMES[0], S2_NAMES[1], S2_NAMES[2]]
    one = BigEarthNetSource(S2_ROOT, ("all",), BigEarthNetOptions(subset_per_split=1))
    assert len(one) == 1 and one.record_id(0) == S2_NAMES[0]


def test_s1_folders_are_selected_by_their_s2_partner(tmp_path):
    split_dir = _split_dir(tmp_path / "splits", train=[S2_NAMES[2], S2_NAMES[0]], test=[SNOWY])
    train = BigEarthNetSource(S1_ROOT, ("train",), S1_OPTIONS, split_dir=str(split_dir))
    assert [train.record_id(i) for i in range(2)] == [S1_OF_S2[S2_NAMES[0]], S1_OF_S2[S2_NAMES[2]]]
    test = BigEarthNetSource(S1_ROOT, ("test",), S1_OPTIONS, split_dir=str(split_dir))
    assert len(test) == 0 and test.excluded["seasonal_snow"] == 1  # Excluded through its S2 partner.
    s1_all, s2_all = BigEarthNetSource(S1_ROOT, ("all",), S1_OPTIONS), BigEarthNetSource(S2_ROOT, ("all",))
    assert [s1_all.record_id(i) for i in range(3)] == [S1_OF_S2[s2_all.record_id(i)] for i in range(3)]
    # An S1 folder the package's pairing does not know is paired through its JSON.
    root = tmp_path / "s1"
    unknown = "S1A_IW_GRDH_1SDV_20991231T000000_00XXX_1_1"
    _copy_patch(S1_ROOT, S1_OF_S2[S2_NAMES[1]], root, unknown)
    other_split_dir = _split_dir(tmp_path / "other_splits", train=[S2_NAMES[1]])
    paired = BigEarthNetSource(root, ("train",), S1_OPTIONS, split_dir=str(other_split_dir))
    assert len(paired) == 1 and paired.record_id(0) == unknown


# ---- Configuration ----


def test_config_keys_are_checked_with_the_keys_named():
    config = _config()
    config.data.channels = 3
    with pytest.raises(ValueError, match=r"data\.channels=3 but data\.bigearthnet\.bands names 10"):
        make_source(config.data, "train")
    config = _config()
    config.data.bands = (0, 1)
    with pytest.raises(ValueError, match=r"leave data\.bands empty"):
        make_source(config.data, "train")
    config = _config()
    config.data.num_classes = 43
    with pytest.raises(ValueError, match=r"data\.num_classes=19"):
        make_source(config.data, "train")
    with pytest.raises(ValueError, match=r"unknown: \['B10'\]"):
        make_source(_config(bands=("B02", "B10")).data, "train")
    config = _config()
    config.data.train_split = "train,val"
    with pytest.raises(ValueError, match="comma-separated list"):
        make_source(config.data, "train")
    locked = config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s2.py")
    with pytest.raises(AttributeError, match="Did you mean"):
        locked.data.bigearthnet.band = ("B02",)
    with pytest.raises(ValueError, match="'data.bigearthnet.sensor'"):
        config_lib.check_override_flags(["--config.data.bigearthnet.sensr=s1"])
    with pytest.raises(ValueError, match="Unknown config key 'data.bigearthnet.label'"):
        config_lib.from_dict({"data": {"bigearthnet": {"label": 43}}})
    assert config_lib.apply_overrides(locked, ["data.bigearthnet.labels=43"]).data.bigearthnet.labels == 43


def test_configs_take_the_package_statistics_and_the_protocol_arguments():
    stats_s2, stats_s1 = bigearthnet_lists.band_stats_s2(), bigearthnet_lists.band_stats_s1()
    for arg, count in (("", 10), ("bands=12", 12)):
        config = config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s2.py:{arg}")
        bands = config.data.bigearthnet.bands
        assert len(bands) == count == config.data.channels and config.data.image_size == 120
        assert config.data.mean == tuple(stats_s2["mean"][b] for b in bands)
        assert config.data.std == tuple(stats_s2["std"][b] for b in bands)
        assert [bands[i] for i in config.eval.display_bands] == ["B04", "B03", "B02"]
    s1 = config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s1.py")
    assert s1.data.bigearthnet.bands == ("VV", "VH") and s1.data.channels == 2
    assert s1.data.mean == (stats_s1["mean"]["VV"], stats_s1["mean"]["VH"])
    assert s1.data.std == (stats_s1["std"]["VV"], stats_s1["std"]["VH"])
    for config in (s1, config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s2.py")):
        assert (config.data.train_split, config.data.query_split, config.data.archive_split) == (
            "train",
            "validation",
            "test",
        )
        assert (
            config.data.multi_label and config.data.num_classes == 19 and config.eval.ks == (5, 10, 20, 100)
        )
    csmae = config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s1.py:protocol=csmae,labels=43")
    assert csmae.data.bigearthnet.subset_per_split == 4944 and csmae.data.num_classes == 43
    with pytest.raises(ValueError, match="bands must be 10 or 12"):
        config_lib.load_config_file(f"{CONFIGS}/bigearthnet_s2.py:bands=4")


# ---- Bad patches: clear errors naming the file; skipped and counted with data.skip_bad ----


def _bad_s2_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The 3 usable sample patches plus 4 bad copies; bad patch name -> the file its error names."""
    root = tmp_path / "s2"
    for name in S2_NAMES:
        _copy_patch(S2_ROOT, name, root, name)
    bad = {}
    missing = _copy_patch(S2_ROOT, S2_NAMES[0], root, "S2A_MSIL2A_20990101T000000_1_1")
    (missing / f"{missing.name}_B05.tif").unlink()
    bad[missing.name] = f"{missing.name}_B05.tif"
    wrong = _copy_patch(S2_ROOT, S2_NAMES[0], root, "S2A_MSIL2A_20990101T000000_1_2")
    tifffile.imwrite(wrong / f"{wrong.name}_B11.tif", np.zeros((59, 60), np.uint16))
    bad[wrong.name] = f"{wrong.name}_B11.tif"
    unlabelled = _copy_patch(S2_ROOT, S2_NAMES[0], root, "S2A_MSIL2A_20990101T000000_1_3")
    (unlabelled / f"{unlabelled.name}_labels_metadata.json").write_text(json.dumps({"coordinates": {}}))
    bad[unlabelled.name] = f"{unlabelled.name}_labels_metadata.json"
    port = _copy_patch(S2_ROOT, S2_NAMES[0], root, "S2A_MSIL2A_20990101T000000_1_4")
    (port / f"{port.name}_labels_metadata.json").write_text(json.dumps({"labels": ["Port areas"]}))
    bad[port.name] = f"{port.name}_labels_metadata.json"
    return root, bad


def test_bad_s2_patches_are_named_or_skipped_and_counted(tmp_path):
    root, bad = _bad_s2_root(tmp_path)
    source = BigEarthNetSource(root, ("all",))
    records = {source.record_id(i): source[i] for i in range(len(source))}
    names = list(bad)
    with pytest.raises(DataError, match=rf"Missing band file .*/{bad[names[0]]}"):
        decode_record(records[names[0]], channels=10)
    with pytest.raises(BadImageError, match=rf"{bad[names[1]]}: the band is 59 x 60 pixels.* 60 x 60"):
        decode_record(records[names[1]], channels=10)
    with pytest.raises(DataError, match=rf"{bad[names[2]]} has no 'labels' list"):
        read_patch_labels(records[names[2]]["labels_path"], 19)
    with pytest.raises(DataError, match=rf"{bad[names[3]]}: no 19-class label"):
        read_patch_labels(records[names[3]]["labels_path"], 19)
    assert read_patch_labels(records[names[3]]["labels_path"], 43)[4] == 1.0  # Port areas, 43 classes.

    config = _config(root=root)
    with pytest.raises(DataError, match=rf"Missing band file .*{bad[names[0]]}.*data\.skip_bad"):
        _eval_rows(config)
    config.data.skip_bad = True
    rows = _eval_rows(config)
    assert int(rows["skipped"].sum()) == 4 and int(rows["valid"].sum()) == 3
    assert sorted(rows["id"][rows["valid"]].tolist()) == list(S2_NAMES)
    # Training reads no labels, and skips the unreadable images.
    train = pipeline.make_train_iterator(config, _sampler(config))
    batch = next(train)
    assert batch["image"].shape == (8, 120, 120, 10) and np.isfinite(batch["image"]).all()


def _sampler(config: ml_collections.ConfigDict):
    from rejepa_jax.masking import make_mask_sampler

    return make_mask_sampler(config.masks, (8, 8))


def test_s1_nan_and_inf_are_named_or_skipped_and_counted(tmp_path):
    root = tmp_path / "s1"
    shutil.copytree(S1_ROOT, root)
    for s2_name, value in ((S2_NAMES[0], np.nan), (S2_NAMES[2], np.inf)):
        path = root / S1_OF_S2[s2_name] / f"{S1_OF_S2[s2_name]}_VH.tif"
        vh = tifffile.imread(path)
        vh[10:12, 3] = value
        tifffile.imwrite(path, vh)
    source = BigEarthNetSource(root, ("all",), S1_OPTIONS)
    for index, s2_name in ((0, S2_NAMES[0]), (2, S2_NAMES[2])):
        with pytest.raises(BadImageError, match=rf"{S1_OF_S2[s2_name]}_VH\.tif: .*non-finite .* in 2 of"):
            decode_record(source[index], channels=2)
    config = _config("s1", root=root)
    config.data.skip_bad = True
    rows = _eval_rows(config)
    assert int(rows["skipped"].sum()) == 2 and rows["id"][rows["valid"]].tolist() == [S1_OF_S2[S2_NAMES[1]]]


# ---- prepare and stats ----


def test_prepared_array_record_reads_back_the_same_arrays_and_labels(tmp_path):
    result = write_bigearthnet_dataset(str(S2_ROOT), str(tmp_path), "ben_sample", {"train": ("all",)})
    assert result.num_examples == {"train": 3}
    folder = _config()
    prepared = _config()
    prepared.data.source = "tfds"
    prepared.data.tfds_name = "ben_sample"
    prepared.data.tfds_data_dir = str(tmp_path)
    prepared.data.archive_split = "train"
    assert isinstance(make_source(prepared.data, "archive"), TfdsSource)
    expected, actual = _eval_rows(folder), _eval_rows(prepared)
    np.testing.assert_array_equal(actual["image"], expected["image"])
    np.testing.assert_array_equal(actual["label"], expected["label"])
    assert actual["label"].dtype == np.float32 and int(actual["valid"].sum()) == 3
    with pytest.raises(FileExistsError):
        write_bigearthnet_dataset(str(S2_ROOT), str(tmp_path), "ben_sample", {"train": ("all",)})


def test_prepare_refuses_bad_patches_atomically_or_skips_and_lists_them(tmp_path):
    root, bad = _bad_s2_root(tmp_path)
    out = tmp_path / "tfds"
    with pytest.raises(DataError, match=r"Missing band file .*--skip_bad"):
        write_bigearthnet_dataset(str(root), str(out), "ben_bad", {"train": ("all",)})
    assert not (out / "ben_bad").exists() and not list(out.glob(".ben_bad-incomplete-*"))
    result = write_bigearthnet_dataset(str(root), str(out), "ben_bad", {"train": ("all",)}, skip_bad=True)
    assert result.num_examples == {"train": 3} and len(result.skipped["train"]) == 4
    for file_name in bad.values():  # Each skipped patch is listed with the file at fault.
        assert sum(file_name in message for message in result.skipped["train"]) == 1


@pytest.mark.slow
def test_prepare_command_line_writes_s1_with_43_labels(tmp_path):
    command = [sys.executable, "-m", "rejepa_jax.prepare", "--out", str(tmp_path), "--name", "ben_s1"]
    env = {**os.environ, "PYTHONPATH": str(CONFIGS.parent)}
    args = ["--bigearthnet_root", str(S1_ROOT), "--sensor", "s1", "--bands", "VH,VV", "--labels", "43"]
    args += ["--split", "archive=all", "--noexclude_seasonal_snow"]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "archive: 4 examples" in done.stdout
    source = TfdsSource("ben_s1", "archive", data_dir=str(tmp_path))
    record = source[3]
    snowy = BigEarthNetSource(
        S1_ROOT,
        ("all",),
        BigEarthNetOptions(sensor="s1", bands=("VH", "VV"), labels=43, exclude_seasonal_snow=False),
    )[3]
    np.testing.assert_array_equal(decode_record(record, 2), decode_record(snowy, 2))
    np.testing.assert_array_equal(record["label"], read_patch_labels(snowy["labels_path"], 43))
    both = subprocess.run([*command, "--root", str(S2_ROOT), *args], env=env, capture_output=True, text=True)
    assert both.returncode != 0 and "exactly one of --root" in both.stderr


def test_stats_read_the_bigearthnet_source():
    stats, skipped = compute_statistics(_config().data)
    images = [decode_record(r, 10) for r in (BigEarthNetSource(S2_ROOT, ("all",))[i] for i in range(3))]
    pixels = np.concatenate([i.reshape(-1, 10) for i in images]).astype(np.float64)
    assert stats.num_images == 3 and skipped == 0
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pixels.std(axis=0), rtol=1e-9)
