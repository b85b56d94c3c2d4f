"""Pictures checked by their pixels and the report checked by its text: colours, order, sizes, links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import near as _near
from helpers import png_pixels as _rgb
from helpers import solid_image as _solid
from helpers import true_runs as _runs

from rejepa_jax.evaluation import (
    descriptor_projection,
    image_display,
    per_class_chart,
    report_writer,
    result_gallery,
)

# --- to_display -------------------------------------------------------------------------------------


def test_display_ready_rgb_is_only_rescaled():
    rgb8 = np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8)
    np.testing.assert_allclose(image_display.to_display(rgb8), rgb8 / 255.0, atol=1e-7)
    rgb_float = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(image_display.to_display(rgb_float), rgb_float)


def test_multiband_images_show_the_first_three_bands_stretched_between_the_2nd_and_98th_percentiles():
    ramp = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    image = np.stack([ramp * (b + 1) + 100 * b for b in range(12)], axis=-1)  # 12 bands, different scales
    image[0, 0, :] = 1e9  # one saturated pixel must not squash the rest
    out = image_display.to_display(image)
    assert out.shape == (100, 100, 3) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    flat = out.reshape(-1, 3)
    # The stretch is per band, so each band lands on the same ramp whatever its scale.
    np.testing.assert_allclose(flat[:, 0], flat[:, 1], atol=1e-4)
    lo, hi = np.percentile(ramp, [2, 98])
    expected = np.clip((ramp.ravel() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(flat[1:, 2], expected[1:], atol=1e-3)
    assert np.mean(flat[:, 0] == 0.0) == pytest.approx(0.02, abs=0.002)  # 2 % clipped at each end
    assert np.median(flat[:, 0]) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1), (6, 7, 2)])
def test_one_band_is_shown_in_grey(shape):
    image = np.random.default_rng(1).normal(size=shape) * 40 - 300  # e.g. dB backscatter
    out = image_display.to_display(image)
    assert out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out.min() == 0.0 and out.max() == 1.0


def test_out_of_range_rgb_constant_and_nan_bands_are_handled():
    standardised = np.random.default_rng(2).normal(size=(8, 8, 3)).astype(np.float32)
    out = image_display.to_display(standardised)
    assert out.min() == 0.0 and out.max() == 1.0  # stretched, not clipped to [0, 1]
    constant = np.full((4, 4, 4), 7.0)
    np.testing.assert_array_equal(image_display.to_display(constant), 0.0)
    with_nan = np.arange(16.0).reshape(4, 4, 1)
    with_nan[0, 0, 0] = np.nan
    out = image_display.to_display(with_nan)
    assert np.all(np.isfinite(out)) and out[0, 0, 0] == 0.0 and out[3, 3, 0] == 1.0


# --- gallery ----------------------------------------------------------------------------------------


def test_gallery_frames_relevant_results_green_and_the_others_red(tmp_path):
    blue = (0.0, 0.0, 1.0)
    relevant = [True, False, True, False]
    path = result_gallery.gallery(
        tmp_path / "gallery.png",
        [_solid((0.5, 0.5, 0.5))],
        [[_solid(blue) for _ in relevant]],
        [relevant],
        [[0.9, 0.8, 0.7, 0.6]],
        ["Forest"],
        [["Forest", "River", "Forest", "Highway"]],
    )
    pixels = _rgb(path)
    assert pixels.shape[:2] == (195, 160 * 5)  # one row, query + 4 results

    green = _near(pixels, result_gallery.RELEVANT_COLOUR)
    red = _near(pixels, result_gallery.IRRELEVANT_COLOUR)
    tiles = [(start, stop, "green") for start, stop in _runs(green.any(axis=0))]
    tiles += [(start, stop, "red") for start, stop in _runs(red.any(axis=0))]
    tiles.sort()
    assert [colour for _, _, colour in tiles] == ["green", "red", "green", "red"]
    query_stop = tiles[0][0]
    assert not (green[:, :query_stop].any() or red[:, :query_stop].any())  # the query has no colour

    for start, stop, colour in tiles:
        mask = green if colour == "green" else red
        left = start + 1  # a column inside the left border
        rows = np.flatnonzero(mask[:, left])
        middle = (rows[0] + rows[-1]) // 2
        assert mask[middle, left]  # the border runs the full height at the left edge
        assert _near(pixels[middle, (start + stop) // 2], blue)  # and the image sits inside it
        assert stop - start > 20  # a real tile, not a stray title pixel


def test_gallery_shows_1_band_and_12_band_images_and_stops_at_max_queries(tmp_path):
    rng = np.random.default_rng(3)
    num_queries, k = 5, 3
    queries = [
        rng.normal(size=(24, 24, 12)) if q % 2 else rng.normal(size=(24, 24, 1)) for q in range(num_queries)
    ]
    results = [[rng.normal(size=(24, 24, 12)) for _ in range(k)] for _ in range(num_queries)]
    relevant = rng.random((num_queries, k)) < 0.5
    scores = np.sort(rng.random((num_queries, k)))[:, ::-1]
    titles = [[f"class {j}" for j in range(k)] for _ in range(num_queries)]
    path = result_gallery.gallery(
        tmp_path / "sub" / "g.png", queries, results, relevant, scores, ["q"] * 5, titles, max_queries=2
    )
    assert path == tmp_path / "sub" / "g.png"
    pixels = _rgb(path)
    assert pixels.shape[:2] == (2 * 195, 160 * (k + 1))
    assert (
        _near(pixels, result_gallery.RELEVANT_COLOUR).sum()
        + _near(pixels, result_gallery.IRRELEVANT_COLOUR).sum()
        > 0
    )
    assert not [p for p in os.listdir(tmp_path / "sub") if p != "g.png"]  # no temporary file left


def test_gallery_rejects_mismatched_inputs(tmp_path):
    image = _solid((0.2, 0.4, 0.6))
    with pytest.raises(ValueError, match="differ in length"):
        result_gallery.gallery(
            tmp_path / "g.png", [image], [[image, image]], [[True]], [[0.5]], ["q"], [["a"]]
        )
    with pytest.raises(ValueError, match="one entry per query"):
        result_gallery.gallery(tmp_path / "g.png", [image], [[image]], [[True]], [[0.5]], ["q", "r"], [["a"]])


# --- per-class bar chart ----------------------------------------------------------------------------


def test_per_class_bars_are_sorted_and_proportional_to_the_values(tmp_path):
    values = [0.3, 0.9, 0.6, 0.1, 0.75]
    path = per_class_chart.per_class_bar(tmp_path / "bar.png", list("abcde"), values, metric_name="P@10")
    blue = _near(_rgb(path), (31 / 255, 119 / 255, 180 / 255), tol=2)  # matplotlib's tab:blue
    widths = [int(blue[start:stop].sum(axis=1).max()) for start, stop in _runs(blue.any(axis=1))]
    assert len(widths) == 5
    expected = sorted(values, reverse=True)  # best on top
    np.testing.assert_allclose(np.array(widths) / widths[0], np.array(expected) / expected[0], atol=0.02)


def test_per_class_bar_handles_one_class_many_classes_and_missing_values(tmp_path):
    one = _rgb(per_class_chart.per_class_bar(tmp_path / "one.png", ["only"], [0.4], metric_name="mAP@10"))
    values = np.random.default_rng(4).random(45)
    values[7] = np.nan  # a class without queries
    names = [f"class number {i}" for i in range(45)]
    many = _rgb(per_class_chart.per_class_bar(tmp_path / "many.png", names, values, metric_name="P@10"))
    assert many.shape[0] > 3 * one.shape[0]  # the chart grows with the number of classes
    assert one.shape[1] == many.shape[1] == 750
    with pytest.raises(ValueError):
        per_class_chart.per_class_bar(tmp_path / "bad.png", ["a", "b"], [0.1], metric_name="P@10")


# --- projection ---------------------------------------------------------------------------------------


def test_pca_2d_matches_the_svd_and_reports_the_explained_variance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 4.0
    coords, ratios = descriptor_projection.pca_2d(x)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(coords), np.abs(u[:, :2] * s[:2]), atol=1e-8)
    np.testing.assert_allclose(ratios, s[:2] ** 2 / np.sum(s**2), rtol=1e-10)
    # More dimensions than points goes through the N × N Gram matrix and gives the same answer.
    wide = np.concatenate([x[:5], np.zeros((5, 20))], axis=1)
    np.testing.assert_allclose(
        descriptor_projection.pca_2d(wide)[0], descriptor_projection.pca_2d(x[:5])[0], atol=1e-8
    )
    # One informative direction: the second coordinate is 0.
    line, line_ratios = descriptor_projection.pca_2d(np.arange(5.0)[:, None])
    np.testing.assert_allclose(line[:, 1], 0.0)
    np.testing.assert_allclose(line_ratios, [1.0, 0.0])


def test_projection_handles_one_dimension_multi_hot_labels_and_many_classes(tmp_path):
    rng = np.random.default_rng(6)
    one_dim = descriptor_projection.projection_2d(
        tmp_path / "d1.png", rng.normal(size=(50, 1)), rng.integers(0, 3, 50), "abc"
    )
    multi_hot = (rng.random((80, 19)) < 0.15).astype(np.int64)
    names = [f"label {i}" for i in range(19)]
    multi = descriptor_projection.projection_2d(
        tmp_path / "mh.png", rng.normal(size=(80, 16)), multi_hot, names
    )
    labels = rng.integers(0, 45, 400)
    many = descriptor_projection.projection_2d(
        tmp_path / "c45.png", rng.normal(size=(400, 8)), labels, [str(i) for i in range(45)]
    )
    for path in (one_dim, multi, many):
        width, height = _rgb(path).shape[1::-1]
        assert width >= 900 and height == 650
    assert _rgb(many).shape[1] > _rgb(one_dim).shape[1]  # a second legend column for 45 classes
    with pytest.raises(ValueError, match="only 'pca'"):
        descriptor_projection.projection_2d(
            tmp_path / "x.png", rng.normal(size=(5, 2)), np.zeros(5, int), "a", method="tsne"
        )


def test_projection_subsamples_deterministically_above_max_points(tmp_path):
    rng = np.random.default_rng(7)
    descriptors, labels = rng.normal(size=(600, 12)), rng.integers(0, 4, 600)
    first = descriptor_projection.projection_2d(
        tmp_path / "a.png", descriptors, labels, "wxyz", max_points=200, seed=1
    )
    again = descriptor_projection.projection_2d(
        tmp_path / "b.png", descriptors, labels, "wxyz", max_points=200, seed=1
    )
    other = descriptor_projection.projection_2d(
        tmp_path / "c.png", descriptors, labels, "wxyz", max_points=200, seed=2
    )
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


@pytest.mark.slow
def test_figures_leave_no_pyplot_state_behind(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from rejepa_jax.evaluation import per_class_chart\n"
        f"per_class_chart.per_class_bar({str(tmp_path / 'b.png')!r}, ['a', 'b'], [0.2, 0.4], "
        "metric_name='P@10')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {**os.environ, "MPLBACKEND": "TkAgg"}  # an interactive default must not matter
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[1])
    assert (tmp_path / "b.png").is_file()


# --- report -------------------------------------------------------------------------------------------


def _report(figure_paths: list[str]) -> dict:
    return {
        "meta": {"num_index": 24300, "num_queries": 2700, "num_archive": 24300, "dataset": "eurosat"},
        "descriptors": {
            "rejepa": {
                "p@10": 0.91234,
                "r@10": 0.00421,
                "map@10/retrieved": 0.95678,
                "map@10/min_k_r": 0.90111,
                "map@10/total": 0.00377,
                "ndcg@10": 0.92222,
                "f1@10": 0.70016,
                "p@5": 0.93,
                "std_mean": 0.51,
            },
            "colour_histogram": {
                "p@10": 0.5,
                "r@10": 0.002,
                "map@10/retrieved": 0.6,
                "map@10/min_k_r": 0.55,
                "map@10/total": 0.0015,
                "ndcg@10": 0.52,
            },
        },
        "index": {
            "method": "scann",
            "k": 10,
            "build_seconds": 12.5,
            "runs": [
                {
                    "settings": {"leaves_to_search": 8, "reorder": 50},
                    "recall_vs_exact": 0.961,
                    "batch_qps": 29290.0,
                    "latency_ms_p50": 0.08,
                    "latency_ms_p99": 1.234,
                    "bytes_per_vector": 96,
                }
            ],
        },
        "figures": [{"caption": f"Figure {i}", "path": p} for i, p in enumerate(figure_paths)],
    }


def test_report_markdown_shows_the_numbers_the_normalisations_and_links_the_figures(tmp_path):
    bar = per_class_chart.per_class_bar(
        tmp_path / "figs" / "bar.png", ["a", "b"], [0.2, 0.4], metric_name="P@10"
    )
    report = _report([str(bar.relative_to(tmp_path)), "figs/not_drawn.png"])
    json_path, md_path = report_writer.write_report(tmp_path, report, title="EuroSAT retrieval")
    assert (json_path, md_path) == (tmp_path / "report.json", tmp_path / "report.md")
    md = md_path.read_text()

    assert md.startswith("# EuroSAT retrieval\n")
    assert "Index: 24,300 vectors · Queries: 2,700 · Archive: 24,300 items" in md
    table_header = next(line for line in md.splitlines() if line.startswith("| Descriptor"))
    for name in ("retrieved", "min_k_r", "total"):
        assert name in table_header
        assert f"- **{name}**" in md  # one explanation line per normalisation
    best = "| **0.9123** | **0.0042** | **0.9568** | **0.9011** | **0.0038** | **0.9222** |"
    assert f"| rejepa | 10 {best} 0.7002 |" in md  # F1 alone: nothing to compare, not bold
    assert "| colour_histogram | 10 | 0.5000 | 0.0020 | 0.6000 | 0.5500 | 0.0015 | 0.5200 | – |" in md
    assert "| rejepa | 5 | 0.9300 |" in md
    assert "| rejepa | std_mean | 0.51 |" in md  # keys outside the table are not dropped
    assert "Recall@10 vs exact" in md
    assert "| leaves_to_search=8, reorder=50 | 0.9610 | 29,290 | 0.080 | 1.23 | 96 |" in md
    assert "- build_seconds: 12.5" in md

    assert "![Figure 0](figs/bar.png)\n" in md
    assert (tmp_path / "figs" / "bar.png").is_file()
    assert "![Figure 1](figs/not_drawn.png) (file missing" in md


def test_report_without_optional_sections(tmp_path):
    report = {"descriptors": {"only": {"p@10": 0.25, "map@10/min_k_r": 0.125}}}
    _, md_path = report_writer.write_report(tmp_path, report, title="Small")
    md = md_path.read_text()
    assert "| only | 10 | 0.2500 | – | – | 0.1250 | – | – |" in md  # no bold with a single descriptor
    assert "## Index" not in md and "## Figures" not in md and "F1@K" not in md
    with pytest.raises(ValueError, match="descriptors"):
        report_writer.write_report(tmp_path, {"meta": {}}, title="Bad")


def test_report_json_round_trips_with_sorted_keys(tmp_path):
    report = _report(["a.png"])
    json_path, _ = report_writer.write_report(tmp_path, report, title="T")
    text = json_path.read_text()
    assert json.loads(text) == report
    assert text == json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_report_json_converts_numpy_and_non_finite_values_to_strict_json(tmp_path):
    report = {"descriptors": {"d": {"p@10": np.float32(0.5), "r@10": float("nan"), "ks": np.array([5, 10])}}}
    json_path, md_path = report_writer.write_report(tmp_path, report, title="T")
    assert json.loads(json_path.read_text()) == {
        "descriptors": {"d": {"p@10": 0.5, "r@10": None, "ks": [5, 10]}}
    }
    assert "| d | 10 | 0.5000 | – |" in md_path.read_text()


def test_report_files_are_replaced_atomically(tmp_path, monkeypatch):
    report_writer.write_report(tmp_path, {"descriptors": {"old": {"p@10": 0.1}}}, title="Old")
    old_json = (tmp_path / "report.json").read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report_writer.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        report_writer.write_report(tmp_path, {"descriptors": {"new": {"p@10": 0.9}}}, title="New")
    assert (tmp_path / "report.json").read_text() == old_json  # the old report is intact
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md"]  # and no temporary file is left
