"""ScaNN index: exactness of brute force, settings validation, safe save/load."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax.retrieval import scann_index as si
from rejepa_jax.retrieval.exact_search import exact_search

K = 10


def test_brute_force_equals_exact_search():
    x = clustered_unit_vectors(2_050, 32, num_clusters=20, seed=1, noise=1.0)
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


def _small_tree():
    db = clustered_unit_vectors(5_000, 32, num_clusters=20, seed=2, noise=0.8)
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
