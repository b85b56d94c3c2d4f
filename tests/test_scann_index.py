"""ScaNN index: exactness of brute force, autotune against exact search on fresh queries, safe save/load."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from rejepa_jax.evaluation.retrieval_metrics import exact_search
from rejepa_jax.retrieval import scann_index as si

K = 10
DB_ROWS, DIM, FRESH = 30_000, 64, 20_000


@pytest.fixture(scope="module")
def clustered():
    """A 30,000 × 64 clustered database and 20,000 fresh queries drawn from the same clusters."""
    x = si.clustered_unit_vectors(DB_ROWS + FRESH, DIM, num_clusters=200, seed=3, noise=0.8)
    return x[:DB_ROWS], x[DB_ROWS:]


@pytest.fixture(scope="module")
def tuned(clustered):
    """autotune at two targets, each with its independently measured recall on the fresh queries."""
    db, fresh = clustered
    _, exact = exact_search(fresh, db, K)
    out = {}
    for target in (0.95, 0.99):
        settings, recall, table = si.autotune(db, target_recall=target, k=K, seed=0)
        indices, _ = si.search(si.build_searcher(db, settings, num_neighbors=K), fresh, K, settings)
        out[target] = (settings, recall, table, si.recall_at_k(indices, exact, K))
    return out


def test_recall_at_k_hand_computed():
    approx = np.array([[1, 2, 3], [4, 5, 6], [7, 7, 8]])
    exact = np.array([[3, 2, 9], [7, 8, -1], [7, 8, 9]])
    # Row 0: 2 of 3 found; row 1: 0 of the 2 valid entries; row 2: a repeated 7 counts once, 2 of 3.
    assert si.recall_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    # k=2 looks at the first two columns of both sides: 1/2, 0/2, 1/2 (7 found; 8 is beyond rank 2).
    assert si.recall_at_k(approx, exact, 2) == pytest.approx((0.5 + 0 + 0.5) / 3)
    # A query whose exact list is empty has nothing to miss.
    assert si.recall_at_k(np.array([[5]]), np.array([[-1]]), 1) == 1.0


def test_search_cost_formula():
    n, d, w_ah, w_re = 10_000, 64, si.LUT16_WEIGHT, si.REORDER_WEIGHT
    tree = si.IndexSettings(kind="tree_ah", num_leaves=100, leaves_to_search=10, reorder=50)
    # Centroids + 1,000 scanned points × 32 AH blocks + 50 reordered rows.
    assert si.search_cost(tree, n, d) == pytest.approx(100 * d + 1_000 * 32 * w_ah + 50 * d * w_re)
    # One leaf holds 100 points on average: a larger reorder cannot rescore more than were scanned.
    one_leaf = dataclasses.replace(tree, leaves_to_search=1, reorder=500)
    assert si.search_cost(one_leaf, n, d) == pytest.approx(100 * d + 100 * 32 * w_ah + 100 * d * w_re)
    assert si.search_cost(si.IndexSettings(), n, d) == n * d


def test_brute_force_equals_exact_search():
    x = si.clustered_unit_vectors(2_050, 32, num_clusters=20, seed=1, noise=1.0)
    db, queries = x[:2_000], x[2_000:]
    settings = si.IndexSettings(kind="brute_force")
    indices, scores = si.search(si.build_searcher(db, settings, num_neighbors=K), queries, K, settings)
    exact_scores, exact_indices = exact_search(queries, db, K)
    np.testing.assert_array_equal(indices, exact_indices)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    assert indices.dtype == np.int64 and scores.dtype == np.float32


def test_settings_round_trip_through_json_and_validate():
    settings = si.IndexSettings(kind="tree_ah", num_leaves=100, leaves_to_search=8, reorder=50)
    assert si.IndexSettings.from_dict(json.loads(json.dumps(dataclasses.asdict(settings)))) == settings
    with pytest.raises(ValueError, match="leaves_to_search"):
        si.IndexSettings(kind="tree_ah", num_leaves=10, leaves_to_search=11, reorder=50)
    with pytest.raises(ValueError, match="kind"):
        si.IndexSettings(kind="hnsw")


def test_unnormalised_database_is_rejected():
    with pytest.raises(ValueError, match="not L2-normalised"):
        si.build_searcher(np.full((100, 8), 2.0, np.float32), si.IndexSettings())


@pytest.mark.parametrize("target", [0.95, 0.99])
def test_autotune_reaches_target_on_fresh_queries(tuned, target):
    settings, recall, table, fresh_recall = tuned[target]
    assert settings.kind == "tree_ah", table[-1]
    assert settings.num_leaves == round(DB_ROWS**0.5)
    assert recall >= target
    assert fresh_recall >= target, (settings, recall, fresh_recall)
    # The pick is the cheapest qualifying row of its own table, and cheaper than brute force.
    chosen_cost = si.search_cost(settings, DB_ROWS, DIM)
    qualifying = [row["cost"] for row in table if row["qualifies"]]
    assert min(qualifying) == chosen_cost < si.search_cost(si.IndexSettings(), DB_ROWS, DIM)


def test_stricter_target_never_picks_a_cheaper_setting(tuned):
    loose, strict = tuned[0.95][0], tuned[0.99][0]
    assert si.search_cost(strict, DB_ROWS, DIM) >= si.search_cost(loose, DB_ROWS, DIM)


def test_autotune_is_deterministic(clustered, tuned):
    db, _ = clustered
    settings, recall, table = si.autotune(db, target_recall=0.95, k=K, seed=0)
    assert (settings, recall, table) == tuned[0.95][:3]


def test_autotune_on_held_out_queries(clustered):
    db, fresh = clustered
    settings, recall, _ = si.autotune(db, target_recall=0.95, k=K, queries=fresh[:1_000])
    indices, _ = si.search(si.build_searcher(db, settings, num_neighbors=K), fresh[1_000:], K, settings)
    assert settings.kind == "tree_ah" and recall >= 0.95
    assert si.recall_at_k(indices, exact_search(fresh[1_000:], db, K)[1], K) >= 0.95


def test_autotune_small_database_is_brute_force():
    db = si.clustered_unit_vectors(1_000, 16, num_clusters=5, seed=0, noise=0.5)
    settings, recall, table = si.autotune(db, brute_force_below=20_000)
    assert settings.kind == "brute_force" and recall == 1.0 and "brute_force_below" in table[-1]["note"]


def test_autotune_falls_back_to_brute_force_when_no_tree_setting_pays(monkeypatch):
    # With AH lookups priced out, every tree setting costs more than brute force.
    monkeypatch.setattr(si, "LUT16_WEIGHT", 1e6)
    db = si.clustered_unit_vectors(3_000, 16, num_clusters=10, seed=0, noise=0.5)
    settings, recall, table = si.autotune(db, brute_force_below=1_000, sample_queries=100)
    assert settings.kind == "brute_force" and recall == 1.0
    assert "falling back to brute force" in table[-1]["note"]


def _small_tree():
    db = si.clustered_unit_vectors(5_000, 32, num_clusters=20, seed=2, noise=0.8)
    settings = si.IndexSettings(kind="tree_ah", num_leaves=70, leaves_to_search=10, reorder=40)
    return db, settings, si.build_searcher(db, settings, num_neighbors=K)


def test_save_load_round_trip_gives_identical_results(tmp_path):
    db, settings, searcher = _small_tree()
    directory = tmp_path / "index"
    files = si.save(searcher, directory)
    assert files == sorted(p.name for p in directory.iterdir())
    assert "scann_assets.pbtxt" in files and not any(name.endswith(".pkl") for name in files)
    loaded = si.load(directory)
    queries = db[:200]
    got, want = si.search(loaded, queries, K, settings), si.search(searcher, queries, K, settings)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(FileExistsError):
        si.save(searcher, directory)


class _Payload:
    """Unpickling this touches a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_a_planted_docid_pickle(tmp_path):
    _, _, searcher = _small_tree()
    directory = tmp_path / "index"
    si.save(searcher, directory)
    marker = tmp_path / "pickle_was_loaded"
    (directory / "scann_docids.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(si.UnsafeIndexError, match="scann_docids.pkl"):
        si.load(directory)
    assert not marker.exists()


def test_load_never_unpickles_a_docid_file_even_unrefused(tmp_path, monkeypatch):
    """The refusal is a second line: the loader itself never reads a docid pickle."""
    db, settings, searcher = _small_tree()
    directory = tmp_path / "index"
    si.save(searcher, directory)
    marker = tmp_path / "pickle_was_loaded"
    (directory / "scann_docids.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the loader unpickled something")

    monkeypatch.setattr(si, "_refuse_pickles", lambda directory: None)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    loaded = si.load(directory)
    assert not marker.exists() and loaded.docids is None
    np.testing.assert_array_equal(
        si.search(loaded, db[:50], K, settings)[0], si.search(searcher, db[:50], K, settings)[0]
    )


def test_load_refuses_asset_paths_outside_the_directory(tmp_path):
    _, _, searcher = _small_tree()
    directory = tmp_path / "index"
    si.save(searcher, directory)
    assets = directory / "scann_assets.pbtxt"
    assets.write_text(assets.read_text().replace('"dataset.npy"', '"../dataset.npy"'))
    (tmp_path / "dataset.npy").write_bytes((directory / "dataset.npy").read_bytes())
    with pytest.raises(si.UnsafeIndexError, match="outside"):
        si.load(directory)


def test_benchmark_reports_throughput_latency_and_size(tmp_path):
    db, settings, searcher = _small_tree()
    directory = tmp_path / "index"
    si.save(searcher, directory)
    result = si.benchmark(searcher, db[:300], K, settings, repeats=2, index_dir=directory, single_queries=50)
    assert result["batch_qps"] > 0 and 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    # The float32 reorder copy alone is 4 bytes per dimension; AH codes and the partition add more.
    assert 4 * 32 < result["bytes_per_vector"] < 4 * 32 * 2
    assert result["bytes_per_vector"] == si.index_bytes(directory) / 5_000
