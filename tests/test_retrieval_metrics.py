"""Hand-computed checks of the exact search and every retrieval metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rejepa_jax.evaluation import retrieval_metrics as rm
from rejepa_jax.retrieval.exact_search import EMPTY_INDEX, exact_search, l2_normalise


def _at_angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in the plane: the cosine ranking follows the angular distance."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def _tie_heavy_descriptors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scaled one-hot and ±1 vectors in 4-D: after normalisation every entry is 0, ±0.5 or 1, so all
    cosines are exact dyadic numbers and equal scores are exactly equal whatever the summation order."""
    onehot = np.eye(4)[rng.integers(0, 4, n)]
    signs = rng.choice([-1.0, 1.0], size=(n, 4))
    rows = np.where(rng.random(n)[:, None] < 0.5, onehot, signs)
    return rows * rng.integers(1, 6, size=(n, 1))


def _brute_force(queries: np.ndarray, archive: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = l2_normalise(queries) @ l2_normalise(archive).T
    order = np.stack([np.lexsort((np.arange(len(archive)), -row)) for row in scores])[:, :k]
    return np.take_along_axis(scores, order, 1), order


# --- exact search -----------------------------------------------------------------------------------


def test_ties_rank_the_lower_archive_index_first_even_across_the_cut():
    archive = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    # Cosines to [1, 0]: 1, 0, 1, 1, 0.707 -> order 0, 2, 3, 4, 1.
    _, idx = exact_search(np.array([[3.0, 0.0]]), archive, 5)
    assert idx.tolist() == [[0, 2, 3, 4, 1]]
    # Three items tie for the first place and only two fit: the two lowest indices win.
    scores, idx = exact_search(np.array([[3.0, 0.0]]), archive, 2)
    assert idx.tolist() == [[0, 2]]
    np.testing.assert_allclose(scores, [[1.0, 1.0]])


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_exact_search_matches_brute_force_argsort_with_ties(chunk):
    rng = np.random.default_rng(0)
    queries, archive = _tie_heavy_descriptors(rng, 17), _tie_heavy_descriptors(rng, 40)
    scores, idx = exact_search(queries, archive, 12, chunk=chunk)
    want_scores, want_idx = _brute_force(queries, archive, 12)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores)


def test_exact_search_matches_brute_force_on_continuous_data():
    rng = np.random.default_rng(1)
    queries, archive = rng.normal(size=(9, 16)), rng.normal(size=(50, 16))
    scores, idx = exact_search(queries, archive, 7, chunk=4)
    want_scores, want_idx = _brute_force(queries, archive, 7)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-12)


def test_exact_search_normalises_and_guards_zero_vectors():
    archive = np.array([[10.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    scores, idx = exact_search(np.array([[0.0, 5.0], [0.0, 0.0]]), archive, 3)
    # Magnitudes do not matter; the zero archive row scores 0; a zero query ties everything at 0.
    assert idx.tolist() == [[1, 0, 2], [0, 1, 2]]
    np.testing.assert_allclose(scores, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_k_larger_than_the_archive_returns_the_whole_archive():
    scores, idx = exact_search(_at_angles([0]), _at_angles([50, 10, 30]), 10)
    assert idx.tolist() == [[1, 2, 0]]
    assert scores.shape == (1, 3)


def test_leave_one_out_never_returns_the_query_itself():
    x = _at_angles([0, 10, 30, 70])
    ids = ["a", "b", "c", "d"]
    scores, idx = exact_search(x, x, 4, query_ids=ids, archive_ids=ids)
    assert idx[:, :3].tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0]]
    # Only three items remain per query: the fourth rank is empty.
    assert (idx[:, 3] == EMPTY_INDEX).all() and np.isneginf(scores[:, 3]).all()
    # Without ids each item finds itself first.
    _, idx = exact_search(x, x, 1)
    assert idx[:, 0].tolist() == [0, 1, 2, 3]


def test_ids_need_both_sides():
    with pytest.raises(ValueError, match="both"):
        exact_search(_at_angles([0]), _at_angles([0]), 1, query_ids=["a"])


# --- per-query metrics ------------------------------------------------------------------------------


def test_the_three_map_normalisations_on_one_worked_example():
    # Ranks 1..5 relevant / not: 1 0 1 0 0; the archive holds R = 10 relevant items; K = 5.
    # P@1 = 1/1, P@3 = 2/3, so S_5 = 1 + 2/3 = 5/3 and R_5 = 2.
    # (a) retrieved: S / R_K       = (5/3) / 2 = 5/6
    # (b) min_k_r:   S / min(K, R) = (5/3) / 5 = 1/3
    # (c) total:     S / R         = (5/3) / 10 = 1/6
    rel, num_rel = np.array([[1, 0, 1, 0, 0]]), np.array([10])
    assert rm.average_precision_at_k(rel, num_rel, 5, "retrieved") == pytest.approx([5 / 6])
    assert rm.average_precision_at_k(rel, num_rel, 5, "min_k_r") == pytest.approx([1 / 3])
    assert rm.average_precision_at_k(rel, num_rel, 5, "total") == pytest.approx([1 / 6])
    assert rm.precision_at_k(rel, 5) == pytest.approx([2 / 5])
    assert rm.recall_at_k(rel, num_rel, 5) == pytest.approx([2 / 10])
    with pytest.raises(ValueError, match="normalisation"):
        rm.average_precision_at_k(rel, num_rel, 5, "full")


def test_k_larger_than_the_number_of_relevant_items():
    # 0 1 1 0 with R = 2, K = 4: P@2 = 1/2, P@3 = 2/3, S = 7/6; R_K = min(K, R) = R = 2 -> 7/12 for all.
    rel, num_rel = np.array([[0, 1, 1, 0]]), np.array([2])
    for norm in rm.NORMALISATIONS:
        assert rm.average_precision_at_k(rel, num_rel, 4, norm) == pytest.approx([7 / 12])
    assert rm.recall_at_k(rel, num_rel, 4) == pytest.approx([1.0])
    assert rm.precision_at_k(rel, 4) == pytest.approx([0.5])
    # All relevant items on top: 1 1 0 0 scores a perfect 1 under (b) and (c), P@4 stays 1/2.
    for norm in rm.NORMALISATIONS:
        assert rm.average_precision_at_k(np.array([[1, 1, 0, 0]]), num_rel, 4, norm) == pytest.approx([1.0])


def test_a_query_with_no_relevant_item_scores_zero():
    rel, num_rel = np.zeros((1, 3), dtype=bool), np.array([0])
    for norm in rm.NORMALISATIONS:
        assert rm.average_precision_at_k(rel, num_rel, 3, norm) == [0.0]
    assert rm.recall_at_k(rel, num_rel, 3) == [0.0]
    assert rm.ndcg_at_k(rel, np.zeros((1, 3)), 3) == [0.0]


def test_short_result_lists_count_missing_ranks_as_not_relevant():
    # Two ranks retrieved, K = 4: P@4 = 2/4; AP (b) divides by min(4, R = 2) = 2.
    rel, num_rel = np.array([[1, 1]]), np.array([2])
    assert rm.precision_at_k(rel, 4) == pytest.approx([0.5])
    assert rm.average_precision_at_k(rel, num_rel, 4, "min_k_r") == pytest.approx([1.0])


def test_csmae_f1_is_formed_from_query_averaged_precision_and_recall():
    # Query 1: |Yq| = 1, one retrieved item with |Yi| = 5 sharing 1 label: p = 1/5, r = 1.
    # Query 2: |Yq| = 5, one retrieved item with |Yi| = 1 sharing 1 label: p = 1, r = 1/5.
    # Mean P = mean R = 0.6, so F1 = 0.6; the mean of per-query F1s would be 1/3.
    p, r = rm.csmae_precision_recall_at_k(np.array([[1], [1]]), np.array([[5], [1]]), np.array([1, 5]), k=1)
    np.testing.assert_allclose(p, [0.2, 1.0])
    np.testing.assert_allclose(r, [1.0, 0.2])
    assert rm.csmae_f1(p.mean(), r.mean()) == pytest.approx(0.6)
    assert rm.csmae_f1(0.0, 0.0) == 0.0


# --- the report -------------------------------------------------------------------------------------


def test_single_label_report_with_leave_one_out():
    # Items at 0, 10, 30, 65, 90 degrees with labels 0 0 1 0 1; every item queries the rest.
    x = _at_angles([0, 10, 30, 65, 90])
    labels = np.array([0, 0, 1, 0, 1])
    ids = np.arange(5)
    report = rm.retrieval_report(x, labels, x, labels, [2], multi_label=False, query_ids=ids, archive_ids=ids)
    # Rankings without self, relevance to the query's label, and R (self excluded):
    #   q0 (0°):  1 2 | 3 4 -> rel 1 0, R = 2: P .5, R@2 .5, S = 1 -> a 1,  b 1/2, c 1/2
    #   q1 (10°): 0 2 | ... -> rel 1 0, R = 2: P .5, R@2 .5, S = 1 -> a 1,  b 1/2, c 1/2
    #   q2 (30°): 1 0 | ... -> rel 0 0, R = 1: all 0
    #   q3 (65°): 4 2 | ... -> rel 0 0, R = 2: all 0
    #   q4 (90°): 3 2 | ... -> rel 0 1, R = 1: P .5, R@2 1, S = 1/2 -> a 1/2, b 1/2, c 1/2
    assert report["p@2"] == pytest.approx(1.5 / 5)
    assert report["r@2"] == pytest.approx(2.0 / 5)
    assert report["map@2/retrieved"] == pytest.approx(2.5 / 5)
    assert report["map@2/min_k_r"] == pytest.approx(1.5 / 5)
    assert report["map@2/total"] == pytest.approx(1.5 / 5)
    # NDCG@2 (binary gains): q0, q1: 1 / (1 + 1/log2 3); q4: (1/log2 3) / 1.
    ndcg_top = 1 / (1 + 1 / math.log2(3))
    assert report["ndcg@2"] == pytest.approx((2 * ndcg_top + 1 / math.log2(3)) / 5)
    assert "f1@2" not in report


def test_report_with_k_larger_than_the_archive():
    archive, labels = _at_angles([10, 20, 30]), np.array([1, 0, 1])
    report = rm.retrieval_report(_at_angles([0]), np.array([1]), archive, labels, [5], multi_label=False)
    # Ranking 0 1 2 -> rel 1 0 1, R = 2: P@5 = 2/5, S = 1 + 2/3, a = 5/6, b = c = 5/6.
    assert report["p@5"] == pytest.approx(2 / 5)
    assert report["r@5"] == pytest.approx(1.0)
    for norm in rm.NORMALISATIONS:
        assert report[f"map@5/{norm}"] == pytest.approx(5 / 6)


def test_multi_label_report_f1_and_graded_ndcg():
    # Query labels {0, 1}; archive ranked i0 {0}, i1 {2}, i2 {0, 1, 2}, i3 {1, 2}.
    # Overlaps (graded relevance) 1 0 2 1, label counts |Yi| 1 1 3 2, binary relevance 1 0 1 1, R = 3.
    query = np.array([[1, 1, 0]])
    archive = np.array([[1, 0, 0], [0, 0, 1], [1, 1, 1], [0, 1, 1]])
    report = rm.retrieval_report(
        _at_angles([0]), query, _at_angles([10, 20, 30, 40]), archive, [2, 4], multi_label=True
    )
    # K = 2: p = (1 + 0)/2, r = (1/2 + 0)/2 -> F1 = 2 * .5 * .25 / .75 = 1/3.
    # DCG = (2^1 - 1)/log2 2 = 1; ideal grades 2 1 1 0 -> IDCG = 3 + 1/log2 3.
    assert report["f1@2"] == pytest.approx(1 / 3)
    assert report["ndcg@2"] == pytest.approx(1 / (3 + 1 / math.log2(3)))
    assert report["p@2"] == pytest.approx(0.5)
    assert report["map@2/min_k_r"] == pytest.approx(0.5)
    # K = 4: p = (1 + 0 + 2/3 + 1/2)/4 = 13/24, r = (1/2 + 0 + 1 + 1/2)/4 = 1/2 -> F1 = 13/25.
    # DCG = 1 + 3/log2 4 + 1/log2 5; IDCG = 3 + 1/log2 3 + 1/log2 4.
    assert report["f1@4"] == pytest.approx(13 / 25)
    dcg = 1 + 3 / 2 + 1 / math.log2(5)
    assert report["ndcg@4"] == pytest.approx(dcg / (3 + 1 / math.log2(3) + 0.5))
    # Binary relevance 1 0 1 1: S = 1 + 2/3 + 3/4, R_K = R = 3.
    assert report["map@4/retrieved"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert report["r@4"] == pytest.approx(1.0)


def test_multi_label_query_without_shared_labels_scores_zero():
    report = rm.retrieval_report(
        _at_angles([0]),
        np.array([[0, 0, 1]]),
        _at_angles([10, 20]),
        np.array([[1, 0, 0], [1, 1, 0]]),
        [2],
        multi_label=True,
    )
    assert all(value == 0.0 for value in report.values())


def test_report_keys_and_label_shape_check():
    x, labels = _at_angles([0, 10, 20]), np.array([0, 1, 0])
    report = rm.retrieval_report(x, labels, x, labels, [1, 3], multi_label=False)
    assert set(report) == {f"{m}@{k}" for m in ("p", "r", "ndcg") for k in (1, 3)} | {
        f"map@{k}/{n}" for k in (1, 3) for n in rm.NORMALISATIONS
    }
    with pytest.raises(ValueError, match="2-D labels"):
        rm.retrieval_report(x, labels, x, labels, [1], multi_label=True)
