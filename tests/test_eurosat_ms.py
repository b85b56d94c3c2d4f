"""EuroSAT-MS: the embedded 13-band sample decodes exactly, band subsets, true-colour display, the
per-band standardised colour floor and the split CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tifffile
from helpers import REPO, load_config

from benchmarks import eurosat_ms_splits
from rejepa_jax import config_lib
from rejepa_jax.data.decode import decode_record
from rejepa_jax.data.decode_options import DecodeOptions
from rejepa_jax.data.sources import make_source
from rejepa_jax.evaluation import image_display, report_figures
from rejepa_jax.retrieval.color_histogram import color_histogram, histogram_descriptor

SPLITS = REPO / "benchmarks" / "eurosat_ms_splits"


CONFIG = config_lib.load_config_module(REPO / "configs" / "eurosat_ms.py")


def _sample_files() -> list[str]:
    root = Path(CONFIG.SAMPLE_ROOT)
    return [
        row["Filename"] for name in ("archive.csv", "query.csv") for row in csv.DictReader(open(root / name))
    ]


# --- the embedded sample and the band sets -------------------------------------------------------


def test_sample_files_decode_to_their_13_bands_unchanged_and_rgb_selects_b04_b03_b02():
    files = _sample_files()
    assert len(files) == 20 and len({f.split("/")[0] for f in files}) == 10
    rgb = load_config("eurosat_ms", "runlocal,bands=rgb").data
    assert tuple(rgb.bands) == (3, 2, 1) and rgb.channels == 3
    for name in files:
        path = Path(CONFIG.SAMPLE_ROOT) / name
        raw = tifffile.imread(path)
        assert raw.shape == (64, 64, 13) and raw.dtype == np.uint16
        decoded = decode_record({"path": str(path)}, 13, tuple(range(13)), DecodeOptions())
        np.testing.assert_array_equal(decoded, raw.astype(np.float32))
        picked = decode_record({"path": str(path)}, rgb.channels, tuple(rgb.bands), DecodeOptions())
        np.testing.assert_array_equal(picked, raw[..., [3, 2, 1]].astype(np.float32))


@pytest.mark.parametrize(
    ("arg", "names"),
    [
        ("", CONFIG.BAND_NAMES),
        ("bands=rgb", ("B04", "B03", "B02")),
        ("bands=10", ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")),
    ],
)
def test_band_sets_select_bands_statistics_and_true_colour_display(arg, names):
    config = load_config("eurosat_ms", arg)
    bands = tuple(config.data.bands)
    assert tuple(CONFIG.BAND_NAMES[b] for b in bands) == names and config.data.channels == len(names)
    assert tuple(config.data.mean) == tuple(CONFIG.MEAN[b] for b in bands)
    assert tuple(config.data.std) == tuple(CONFIG.STD[b] for b in bands)
    shown = tuple(names[i] for i in config.eval.display_bands)
    assert shown == ("B04", "B03", "B02")
    assert config.eval.histogram_space == "standardised"
    with pytest.raises(ValueError, match="bands must be one of"):
        load_config("eurosat_ms", "bands=rgbn")


def test_band_order_names_b8a_last_as_the_files_hold_it():
    # Plane 9 is B10 (cirrus, near zero) and plane 12 is B8A (near-infrared, close to B08).
    assert CONFIG.MEAN[CONFIG.BAND_NAMES.index("B10")] < 50
    b8a, b08 = (CONFIG.MEAN[CONFIG.BAND_NAMES.index(n)] for n in ("B8A", "B08"))
    assert abs(b8a - b08) / b08 < 0.2


@pytest.mark.parametrize("arg", ["runlocal", "runlocal,bands=rgb", "runlocal,bands=10"])
def test_gallery_images_are_the_same_true_colour_picture_for_every_band_set(arg):
    config = load_config("eurosat_ms", arg)
    source = make_source(config.data, "query")
    first = Path(source[0]["path"])
    shown = report_figures._display_image(source, 0, config)
    expected = np.clip(tifffile.imread(first)[..., [3, 2, 1]] / 2750.0, 0.0, 1.0)
    assert shown.shape == (64, 64, 3)
    np.testing.assert_allclose(shown, expected, atol=1e-4)


# --- to_display with display bands and range -----------------------------------------------------------


def test_to_display_picks_the_display_bands_and_applies_one_linear_range():
    image = np.zeros((2, 2, 13), dtype=np.float32)
    image[..., 3] = [[0.0, 1375.0], [2750.0, 4000.0]]  # B04
    image[..., 2] = [[275.0, 550.0], [-10.0, 1000.0]]  # B03
    image[..., 1] = 2750.0 / 4  # B02
    image[..., 0] = 99999.0  # never shown
    out = image_display.to_display(image, bands=(3, 2, 1), value_range=(0.0, 2750.0))
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.5], [1.0, 1.0]], atol=1e-7)  # clipped above
    np.testing.assert_allclose(out[..., 1], [[0.1, 0.2], [0.0, 1000 / 2750]], atol=1e-7)  # and below
    np.testing.assert_allclose(out[..., 2], 0.25, atol=1e-7)
    # The range is shared, so a band twice as bright shows twice as bright (no per-band stretch).
    offset = image_display.to_display(image, bands=(3, 2, 1), value_range=(275.0, 3025.0))
    np.testing.assert_allclose(offset[0, 1, 0], (1375 - 275) / 2750, atol=1e-7)
    grey = image_display.to_display(image, bands=(3,), value_range=(0.0, 2750.0))
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    with pytest.raises(ValueError, match="1 or 3 indices"):
        image_display.to_display(image, bands=(3, 2))
    with pytest.raises(ValueError, match="1 or 3 indices"):
        image_display.to_display(image, bands=(13, 2, 1))
    with pytest.raises(ValueError, match="high > low"):
        image_display.to_display(image, bands=(3, 2, 1), value_range=(100.0, 100.0))


def test_display_bands_without_a_range_get_the_percentile_stretch_of_those_bands():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 5000, size=(16, 16, 13))
    out = image_display.to_display(image, bands=(3, 2, 1))
    np.testing.assert_array_equal(out, image_display.to_display(image[..., [3, 2, 1]]))
    assert not np.array_equal(out, image_display.to_display(image))  # not the first three bands


# --- the colour-histogram floor in standardised space -------------------------------------------------


def _eval(space: str, **extra) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"histogram_space": space, "histogram_bins": 8, "histogram_range": (0.0, 255.0), **extra}
    )


def test_standardised_histogram_bins_each_bands_z_scores_over_one_range():
    # Four bands of very different raw scales, each one z-score per image; 8 bins over (-3, 3) are
    # 0.75 wide: -2.9 -> bin 0, -0.1 -> 3, 0.1 -> 4, 2.9 -> 7 (and -5 -> 0, clipped).
    z = np.array([-2.9, -0.1, 0.1, 2.9], dtype=np.float32)
    data = ml_collections.ConfigDict(
        {"mean": (12.0, 950.0, 2300.0, 2600.0), "std": (4.4, 590.0, 1100.0, 1230.0)}
    )
    normalised = np.broadcast_to(z, (1, 4, 4, 4)).copy()
    desc = histogram_descriptor(normalised, data, _eval("standardised", histogram_zrange=(-3.0, 3.0)))
    assert desc.shape == (1, 4 * 8)
    assert np.flatnonzero(desc[0]).tolist() == [0 * 8 + 0, 1 * 8 + 3, 2 * 8 + 4, 3 * 8 + 7]
    np.testing.assert_allclose(desc[0, np.flatnonzero(desc[0])], 0.5)  # equal counts, unit norm
    normalised[0, 0, 0, 0] = -5.0
    assert np.flatnonzero(histogram_descriptor(normalised, data, _eval("standardised"))[0])[0] == 0
    # Binned raw over 0..255, the same reflectances all fall in the top bin of bands 1-3: no signal.
    raw = histogram_descriptor(normalised, data, _eval("raw"))
    assert np.flatnonzero(raw[0]).tolist()[1:] == [1 * 8 + 7, 2 * 8 + 7, 3 * 8 + 7]
    with pytest.raises(ValueError, match="histogram_space"):
        histogram_descriptor(normalised, data, _eval("hsv"))


def test_raw_space_is_the_unchanged_eurosat_rgb_floor():
    rng = np.random.default_rng(1)
    data = ml_collections.ConfigDict({"mean": (88.9, 97.9, 104.8), "std": (51.7, 35.0, 29.8)})
    raw = rng.integers(0, 256, size=(3, 8, 8, 3)).astype(np.float32)
    normalised = (raw - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    before = color_histogram(
        normalised * np.asarray(data.std, np.float32) + np.asarray(data.mean, np.float32),
        value_range=(0.0, 255.0),
    )
    np.testing.assert_array_equal(histogram_descriptor(normalised, data, _eval("raw")), before)
    assert before.shape == (3, 512)


# --- the split CSVs ----------------------------------------------------------------------------------


def _rows(name: str) -> list[tuple[str, int]]:
    return [(r["Filename"], int(r["Label"])) for r in csv.DictReader(open(SPLITS / name))]


def test_split_csvs_follow_the_rgb_protocol_and_cover_the_469_files_once():
    archive, query = _rows("archive.csv"), _rows("query.csv")
    tune_archive, tune_query = _rows("tune_archive.csv"), _rows("tune_query.csv")
    assert (len(archive), len(query), len(tune_archive), len(tune_query)) == (424, 45, 329, 95)
    assert not {f for f, _ in archive} & {f for f, _ in query}
    assert sorted(tune_archive + tune_query) == sorted(archive)
    label_map = json.loads((SPLITS / "label_map.json").read_text())
    for filename, label in archive + query:
        assert filename.endswith(".tif") and label_map[filename.split("/")[0]] == label


def test_split_script_excludes_and_reports_files_without_an_rgb_namesake():
    script = eurosat_ms_splits
    by_stem = {
        "Forest/Forest_2": ("test", 1),
        "Forest/Forest_10": ("train", 1),
        "River/River_1": ("train", 1),
    }
    rows, excluded = script.assign(
        ["Forest/Forest_10.tif", "Forest/Forest_2.tif", "Forest/Forest_3.tif", "River/River_1.tif"],
        by_stem,
        {"Forest": 1, "River": 8},
    )
    assert rows["archive"] == rows["tune_archive"] == [("Forest/Forest_10.tif", 1)]
    assert rows["query"] == [("Forest/Forest_2.tif", 1)] and rows["tune_query"] == []
    assert excluded == [
        "Forest/Forest_3.tif: no RGB namesake in the split CSVs",
        "River/River_1.tif: folder 'River' but the RGB namesake has label 1",
    ]
