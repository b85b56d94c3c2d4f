"""ScaNN auto-tune: the analytic cost, and the pick against exact search on fresh queries."""

import dataclasses

import pytest

from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax.retrieval import index_autotune as at
from rejepa_jax.retrieval import scann_index as si
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.exact_search import exact_search

K = 10
DB_ROWS, DIM, FRESH = 30_000, 64, 20_000


@pytest.fixture(scope="module")
def clustered():
    """A 30,000 × 64 clustered database and 20,000 fresh queries drawn from the same clusters."""
    x = clustered_unit_vectors(DB_ROWS + FRESH, DIM, num_clusters=200, seed=3, noise=0.8)
    return x[:DB_ROWS], x[DB_ROWS:]


@pytest.fixture(scope="module")
def tuned(clustered):
    """autotune at two targets, each with its independently measured recall on the fresh queries."""
    db, fresh = clustered
    _, exact = exact_search(fresh, db, K)
    out = {}
    for target in (0.95, 0.99):
        settings, recall, table = at.autotune(db, target_recall=target, k=K, seed=0)
        indices, _ = si.search(si.build_searcher(db, settings, num_neighbors=K), fresh, K, settings)
        out[target] = (settings, recall, table, recall_vs_exact_at_k(indices, exact, K))
    return out


def test_search_cost_formula():
    n, d, w_ah, w_re = 10_000, 64, at.LUT16_WEIGHT, at.REORDER_WEIGHT
    tree = si.IndexSettings(kind="tree_ah", num_leaves=100, leaves_to_search=10, reorder=50)
    # Centroids + 1,000 scanned points × 32 AH blocks + 50 reordered rows.
    assert at.search_cost(tree, n, d) == pytest.approx(100 * d + 1_000 * 32 * w_ah + 50 * d * w_re)
    # One leaf holds 100 points on average: a larger reorder cannot rescore more than were scanned.
    one_leaf = dataclasses.replace(tree, leaves_to_search=1, reorder=500)
    assert at.search_cost(one_leaf, n, d) == pytest.approx(100 * d + 100 * 32 * w_ah + 100 * d * w_re)
    assert at.search_cost(si.IndexSettings(), n, d) == n * d


@pytest.mark.parametrize("target", [0.95, 0.99])
@pytest.mark.slow  # Tunes on a 30,000-row database.
def test_autotune_reaches_target_on_fresh_queries(tuned, target):
    settings, recall, table, fresh_recall = tuned[target]
    assert settings.kind == "tree_ah", table[-1]
    assert settings.num_leaves == round(DB_ROWS**0.5)
    assert recall >= target
    assert fresh_recall >= target, (settings, recall, fresh_recall)
    # The pick is the cheapest qualifying row of its own table, and cheaper than brute force.
    chosen_cost = at.search_cost(settings, DB_ROWS, DIM)
    qualifying = [row["cost"] for row in table if row["qualifies"]]
    assert min(qualifying) == chosen_cost < at.search_cost(si.IndexSettings(), DB_ROWS, DIM)


@pytest.mark.slow  # Tunes on a 30,000-row database.
def test_stricter_target_never_picks_a_cheaper_setting(tuned):
    loose, strict = tuned[0.95][0], tuned[0.99][0]
    assert at.search_cost(strict, DB_ROWS, DIM) >= at.search_cost(loose, DB_ROWS, DIM)


@pytest.mark.slow  # Tunes on a 30,000-row database.
def test_a_reorder_row_stops_where_more_leaves_stop_raising_recall(tuned):
    table = tuned[0.99][2]
    shallow = [row for row in table if row["reorder"] == K]  # k candidates cap recall well below 0.99.
    assert not any(row["qualifies"] for row in shallow)
    assert len(shallow) < len(at.leaves_grid(shallow[0]["num_leaves"]))
    recalls, steps = [row["recall"] for row in shallow], at.PLATEAU_STEPS
    gains = [recalls[i] - recalls[i - steps] for i in range(steps, len(recalls))]
    assert gains[-1] < at.PLATEAU_GAIN <= min(gains[:-1], default=at.PLATEAU_GAIN)  # The first plateau.


@pytest.mark.slow  # Tunes on a 30,000-row database.
def test_autotune_is_deterministic(clustered, tuned):
    db, _ = clustered
    settings, recall, table = at.autotune(db, target_recall=0.95, k=K, seed=0)
    assert (settings, recall, table) == tuned[0.95][:3]


@pytest.mark.slow  # Tunes on a 30,000-row database.
def test_autotune_on_held_out_queries(clustered):
    db, fresh = clustered
    settings, recall, _ = at.autotune(db, target_recall=0.95, k=K, queries=fresh[:1_000])
    indices, _ = si.search(si.build_searcher(db, settings, num_neighbors=K), fresh[1_000:], K, settings)
    assert settings.kind == "tree_ah" and recall >= 0.95
    assert recall_vs_exact_at_k(indices, exact_search(fresh[1_000:], db, K)[1], K) >= 0.95


def test_autotune_small_database_is_brute_force():
    db = clustered_unit_vectors(1_000, 16, num_clusters=5, seed=0, noise=0.5)
    settings, recall, table = at.autotune(db, brute_force_below=20_000)
    assert settings.kind == "brute_force" and recall == 1.0 and "brute_force_below" in table[-1]["note"]


def test_autotune_falls_back_to_brute_force_when_no_tree_setting_pays(monkeypatch):
    # With AH lookups priced out, every tree setting costs more than brute force.
    monkeypatch.setattr(at, "LUT16_WEIGHT", 1e6)
    db = clustered_unit_vectors(3_000, 16, num_clusters=10, seed=0, noise=0.5)
    settings, recall, table = at.autotune(db, brute_force_below=1_000, sample_queries=100)
    assert settings.kind == "brute_force" and recall == 1.0
    assert "falling back to brute force" in table[-1]["note"]
