"""Index speed: the timing protocol and a ScaNN index's throughput, latency and size."""

import numpy as np
import pytest

from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax.retrieval import index_speed
from rejepa_jax.retrieval import scann_index as si

K = 10


def _small_tree():
    db = clustered_unit_vectors(5_000, 32, num_clusters=20, seed=2, noise=0.8)
    settings = si.IndexSettings(kind="tree_ah", num_leaves=70, leaves_to_search=10, reorder=40)
    return db, settings, si.build_searcher(db, settings, num_neighbors=K)


def test_time_search_follows_the_protocol():
    batches, singles = [], []
    queries = np.zeros((50, 4), np.float32)
    timing = index_speed.time_search(
        lambda q: batches.append(len(q)),
        lambda q: singles.append(q.shape),
        queries,
        repeats=3,
        single_queries=20,
    )
    assert batches == [32, 50, 50, 50]  # One warm-up batch, then `repeats` full batches.
    assert singles == [(4,)] * 20  # One query at a time, not a batch of one.
    assert timing["latency_queries"] == 20 and timing["num_queries"] == 50
    assert timing["batch_qps"] > 0 and timing["latency_p50_ms"] <= timing["latency_p99_ms"]
    with pytest.raises(ValueError, match="one single query"):
        index_speed.time_search(len, len, queries, repeats=1, single_queries=0)


def test_measure_speed_reports_throughput_latency_and_size(tmp_path):
    db, settings, searcher = _small_tree()
    directory = tmp_path / "index"
    si.save(searcher, directory)
    result = index_speed.measure_speed(
        searcher, db[:300], K, settings, repeats=2, index_dir=directory, single_queries=50
    )
    assert result["batch_qps"] > 0 and 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    # The float32 reorder copy alone is 4 bytes per dimension; AH codes and the partition add more.
    assert 4 * 32 < result["bytes_per_vector"] < 4 * 32 * 2
    assert result["bytes_per_vector"] == index_speed.index_bytes(directory) / 5_000
    assert result["latency_queries"] == 50 and result["num_queries"] == 300
    # Without a saved copy it saves one to a temporary directory: the same files, the same size.
    unsaved = index_speed.measure_speed(searcher, db[:40], K, settings, repeats=1, single_queries=5)
    assert unsaved["bytes_per_vector"] == result["bytes_per_vector"]
