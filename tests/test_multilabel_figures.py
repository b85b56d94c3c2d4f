"""Pictures of multi-label retrieval: shared-label fractions, graded borders, per-class bars, query picks."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import near as _near
from helpers import png_pixels as _rgb
from helpers import solid_image as _solid
from helpers import true_runs as _runs
from PIL import Image

from rejepa_jax import config_lib, run_setup
from rejepa_jax import state as state_lib
from rejepa_jax.evaluation import report_figures, result_gallery, retrieval_report
from rejepa_jax.retrieval.embedding import SplitEmbedder
from rejepa_jax.retrieval.exact_search import l2_normalise

# Four classes; query 0 holds {0, 1}, query 1 holds {2}.
QUERY_LABELS = np.array([[1, 1, 0, 0], [0, 0, 1, 0]])
ARCHIVE_LABELS = np.array(
    [
        [1, 1, 0, 0],  # 0: same labels as query 0
        [1, 0, 0, 0],  # 1: one of query 0's two
        [1, 0, 1, 1],  # 2: shares 0 with query 0 (union 4), 2 with query 1 (union 3)
        [0, 0, 0, 1],  # 3: shares nothing with either
    ]
)
RANKING = np.array([[0, 1, 2, 3], [2, 3, 0, 1]])


def test_label_overlap_counts_shared_and_union_labels_of_each_result():
    common, union = report_figures.label_overlap(QUERY_LABELS, ARCHIVE_LABELS, RANKING)
    np.testing.assert_array_equal(common, [[2, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(union, [[2, 2, 4, 3], [3, 2, 3, 2]])
    np.testing.assert_allclose(common / union, [[1.0, 0.5, 0.25, 0.0], [1 / 3, 0.0, 0.0, 0.0]])


def test_relevance_colour_is_green_when_all_labels_are_shared_red_when_none_and_graded_between():
    assert result_gallery.relevance_colour(1.0) == result_gallery.RELEVANT_COLOUR
    assert result_gallery.relevance_colour(0.0) == result_gallery.IRRELEVANT_COLOUR
    low, high = np.array(result_gallery.PARTIAL_LOW_COLOUR), np.array(result_gallery.PARTIAL_HIGH_COLOUR)
    np.testing.assert_allclose(result_gallery.relevance_colour(0.5), (low + high) / 2)
    np.testing.assert_allclose(result_gallery.relevance_colour(0.25), low + 0.25 * (high - low))
    greens = [result_gallery.relevance_colour(f)[1] for f in (0.1, 0.4, 0.7, 0.9)]
    assert greens == sorted(greens) and greens[0] < greens[-1]  # more shared: yellower
    for fraction in (1e-3, 0.5, 1 - 1e-3):  # a partial match never looks like a full one or a miss
        colour = np.array(result_gallery.relevance_colour(fraction))
        assert np.abs(colour - result_gallery.RELEVANT_COLOUR).max() > 0.3
        assert np.abs(colour - result_gallery.IRRELEVANT_COLOUR).max() > 0.3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        result_gallery.relevance_colour(1.5)


def test_multilabel_gallery_grades_borders_by_the_shared_fraction_and_titles_them(tmp_path, monkeypatch):
    titles = []
    show = result_gallery._show
    monkeypatch.setattr(
        result_gallery, "_show", lambda ax, image, title: (titles.append(title), show(ax, image, title))
    )
    blue = (0.0, 0.0, 1.0)
    shared = [(2, 2), (1, 3), (2, 3), (0, 3)]
    path = result_gallery.gallery(
        tmp_path / "g.png",
        [_solid((0.5, 0.5, 0.5))],
        [[_solid(blue) for _ in shared]],
        [[True, True, True, False]],
        [[0.9, 0.8, 0.7, 0.6]],
        ["a,b"],
        [["a,b", "a", "a,b,c", "d"]],
        shared=[shared],
    )
    pixels = _rgb(path)
    assert pixels.shape[:2] == (195 + 45, 800)  # one row plus the legend strip
    tiles = pixels[:195]
    expected = [
        result_gallery.RELEVANT_COLOUR,
        result_gallery.relevance_colour(1 / 3),
        result_gallery.relevance_colour(2 / 3),
        result_gallery.IRRELEVANT_COLOUR,
    ]
    starts = []
    for colour in expected:
        mask = _near(tiles, colour)
        runs = [(a, b) for a, b in _runs(mask.any(axis=0)) if b - a > 20]
        assert len(runs) == 1, colour  # exactly one tile has this border
        start, stop = runs[0]
        starts.append(start)
        rows = np.flatnonzero(mask[:, start + 1])
        assert rows[-1] - rows[0] > 40  # a full-height border, not a stray pixel
        assert _near(tiles[(rows[0] + rows[-1]) // 2, (start + stop) // 2], blue)  # the image inside it
    assert starts == sorted(starts)  # in rank order
    assert titles[1:] == [
        "a,b\n✓ 2/2 shared 0.900",
        "a\n~ 1/3 shared 0.800",
        "a,b,c\n~ 2/3 shared 0.700",
        "d\n✗ 0/3 shared 0.600",
    ]
    legend = pixels[195:]
    for colour in expected[::3]:  # the legend shows the key colours
        assert _near(legend, colour).sum() > 20


def test_single_label_gallery_keeps_its_layout_and_two_colours(tmp_path):
    path = result_gallery.gallery(
        tmp_path / "g.png",
        [_solid((0.5, 0.5, 0.5))],
        [[_solid((0.0, 0.0, 1.0))] * 2],
        [[True, False]],
        [[0.9, 0.8]],
        ["Forest"],
        [["Forest", "River"]],
    )
    pixels = _rgb(path)
    assert pixels.shape[:2] == (195, 480)  # no legend strip
    partial = _near(pixels, result_gallery.relevance_colour(0.5), tol=10)
    assert not partial.any()


def test_per_class_mean_averages_over_the_queries_holding_each_class():
    values = np.array([1.0, 0.5, 0.0])
    labels = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]])
    result = report_figures.per_class_mean(values, labels, 4, multi_label=True)
    np.testing.assert_allclose(result[[0, 1, 3]], [0.5, 0.75, 0.0])
    assert math.isnan(result[2])  # no query holds class 2: n/a in the chart
    single = report_figures.per_class_mean(values, np.array([2, 0, 2]), 4, multi_label=False)
    np.testing.assert_allclose(single[[0, 2]], [0.5, 0.5])
    assert np.isnan(single[[1, 3]]).all()


def test_pick_queries_covers_the_most_classes_first_for_multilabel_data():
    labels = np.array(
        [
            [1, 0, 0, 0, 0],  # 0
            [1, 1, 0, 0, 0],  # 1
            [0, 0, 1, 1, 1],  # 2: three new classes, picked first
            [0, 1, 0, 0, 0],  # 3
            [1, 1, 0, 0, 0],  # 4: ties with 1 on new classes; 1 comes first
        ]
    )
    np.testing.assert_array_equal(report_figures._pick_queries(labels, 3, True), [2, 1, 0])
    np.testing.assert_array_equal(report_figures._pick_queries(labels, 10, True), [2, 1, 0, 3, 4])
    # Single-label data: the first query of each class, then the rest in order.
    np.testing.assert_array_equal(
        report_figures._pick_queries(np.array([1, 1, 0, 2]), 4, False), [2, 0, 3, 1]
    )


@pytest.mark.slow
def test_evaluate_draws_graded_gallery_and_per_class_bars_for_multilabel_data(tmp_path):
    config = config_lib.base_config()
    config.data.source = "synthetic"
    config.data.synthetic_size = 32
    config.data.image_size = 32
    config.data.channels = 4
    config.data.mean, config.data.std = (120.0,) * 4, (50.0,) * 4
    config.data.num_classes = 6
    config.data.multi_label = True
    config.model.variant = "Ti/8"
    config.model.width, config.model.depth, config.model.num_heads = 32, 1, 2
    config.eval.batch_size = 16
    config.lock()
    run = run_setup.build_run(config)
    params = state_lib.init_encoder_params(jax.random.key(0), encoder=run.encoder, image_shape=(32, 32, 4))
    archive_split = SplitEmbedder(config, run.encoder, run.mesh).embed_split("archive", {"m": params})
    archive = retrieval_report.Archive(
        config=config,
        params=params,
        descriptors=l2_normalise(archive_split.pooled["m"]),
        labels=archive_split.labels,
        positions=archive_split.index,
        class_names=[f"class {c}" for c in range(6)],
        index=None,
        meta={},
    )
    report = retrieval_report.evaluate(
        archive, "query", tmp_path, ks=[5, 10], baselines=(), gallery_queries=3
    )
    figures_by_path = {figure["path"]: figure["caption"] for figure in report["figures"]}
    assert set(figures_by_path) == {"gallery.png", "per_class.png", "projection.png"}
    assert "Jaccard" in figures_by_path["gallery.png"]
    assert "queries that hold the class" in figures_by_path["per_class.png"]
    with Image.open(Path(tmp_path) / "gallery.png") as gallery:
        # Three query rows of 1.55 in + 0.2 in per title line (two class names and the mark: 3 lines),
        # and the legend strip, at 100 dpi.
        assert gallery.size[1] == 3 * (155 + 3 * 20) + 45
    blue = _near(_rgb(tmp_path / "per_class.png"), (31 / 255, 119 / 255, 180 / 255), tol=2)
    assert len(_runs(blue.any(axis=1))) >= 5  # bars for the classes that have queries
