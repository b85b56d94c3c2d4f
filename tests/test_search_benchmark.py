"""The search benchmark's own logic, on tiny data and without faiss (a benchmark-only dependency).

Grid pruning, best-setting selection, the autotune comparison, table formatting, the held-out split,
and one end-to-end run of the exact and ScaNN methods with faiss made unimportable.
"""

from __future__ import annotations

import ast
import json
import pathlib
import sys

import numpy as np
import pytest

from benchmarks import search_benchmark as sb
from benchmarks import search_datasets, search_markdown, search_peers, search_summary
from benchmarks.search_peers.common import Row, make_row
from benchmarks.search_peers.exact import matmul_top_k
from benchmarks.search_peers.sweep import sweep
from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax.retrieval import manifest
from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k
from rejepa_jax.retrieval.exact_search import exact_search


def _row(method: str, recall: float, qps: float, **extra) -> Row:
    timing = {"batch_qps": qps, "latency_p50_ms": 1000 / qps, "latency_p99_ms": 2000 / qps}
    return make_row(
        method, extra.pop("params", {}), recall, timing, build_s=1.0, bytes_per_vector=8.0, **extra
    )


def test_holdout_split_is_disjoint_and_complete():
    db_rows, query_rows = search_datasets.holdout_split(100, 10, seed=3)
    assert len(query_rows) == 10 and len(db_rows) == 90
    assert not set(db_rows) & set(query_rows)
    assert sorted([*db_rows, *query_rows]) == list(range(100))
    assert np.array_equal(query_rows, search_datasets.holdout_split(100, 10, seed=3)[1])
    with pytest.raises(ValueError, match="holdout"):
        search_datasets.holdout_split(10, 10, seed=0)


def test_index_dataset_holds_queries_out_or_reads_them(tmp_path):
    rows = clustered_unit_vectors(50, 8, 3, seed=0, noise=0.5)
    np.save(tmp_path / manifest.DESCRIPTORS, rows)
    held = search_datasets.index_dataset(tmp_path, 5, seed=0, queries_npy=None)
    assert held.db.shape == (45, 8) and held.queries.shape == (5, 8)
    assert not (held.queries[:, None, :] == held.db[None]).all(axis=2).any()  # No query is in the database.

    np.save(tmp_path / "q.npy", 3 * rows[:4])
    given = search_datasets.index_dataset(tmp_path, 5, seed=0, queries_npy=tmp_path / "q.npy")
    assert given.db.shape == (50, 8)
    np.testing.assert_allclose(given.queries, rows[:4], atol=1e-6)  # Normalised on load.


def test_sweep_stops_at_the_highest_target_on_a_plateau_or_at_the_end():
    curve = {1: 0.5, 2: 0.8, 4: 0.96, 8: 0.995, 16: 0.999}
    calls = []

    def recall_of(value):
        calls.append(value)
        return curve[value]

    reached = sweep("m", {}, "p", [16, 8, 4, 2, 1, 2], recall_of, stop_at=0.99, min_gain=0.001, patience=2)
    assert reached.measured == [(1, 0.5), (2, 0.8), (4, 0.96), (8, 0.995)]
    assert reached.stop == "reached" and reached.candidates == [1, 2, 4, 8, 16] and calls == [1, 2, 4, 8]

    # Two steps gaining less than min_gain end the row; a drop counts as no gain.
    flat_curve = {1: 0.7, 2: 0.8, 3: 0.8005, 4: 0.79, 5: 0.9}
    flat = sweep(
        "m", {}, "p", list(flat_curve), flat_curve.__getitem__, stop_at=0.99, min_gain=0.001, patience=2
    )
    assert [v for v, _ in flat.measured] == [1, 2, 3, 4] and flat.stop == "flat"

    short = sweep("m", {}, "p", [1, 2], curve.__getitem__, stop_at=0.99, min_gain=0.001, patience=2)
    assert short.stop == "exhausted" and len(short.measured) == 2


def test_best_per_target_takes_the_fastest_qualifying_setting_of_each_method():
    rows = [
        _row("scann", 0.96, 900),
        _row("scann", 0.94, 5000),  # Fastest, but below both targets.
        _row("scann", 0.992, 400),
        _row("scann", 0.97, 1000),
        _row("faiss_hnsw", 0.951, 700),
        _row("scann_autotune", 0.999, 10_000, target=0.95),  # Compared separately, never "best".
    ]
    best = search_summary.best_per_target(rows, [0.95, 0.99])
    assert best["0.95"]["scann"]["batch_qps"] == 1000
    assert best["0.99"]["scann"]["batch_qps"] == 400
    assert best["0.95"]["faiss_hnsw"]["batch_qps"] == 700 and best["0.99"]["faiss_hnsw"] is None
    assert "scann_autotune" not in best["0.95"]


def test_compare_autotune_against_the_grid_and_the_best_peer():
    rows = [
        _row("scann", 0.96, 1000),
        _row("faiss_ivfpq", 0.97, 800),
        _row("faiss_hnsw", 0.99, 500),
        _row("exact_matmul", 1.0, 100),
        _row("scann_autotune", 0.97, 700, target=0.95),
        _row("scann_autotune", 0.985, 300, target=0.99),
    ]
    at_95, at_99 = search_summary.compare_autotune(rows, search_summary.best_per_target(rows, [0.95, 0.99]))
    assert at_95["vs_best_scann_grid"] == pytest.approx(0.7) and at_95["within_1_5x_of_grid"]
    assert at_95["best_peer"] == "faiss_ivfpq" and at_95["vs_best_peer"] == pytest.approx(700 / 800)
    assert not at_95["at_least_best_peer"] and at_95["meets_target"]
    # No grid setting reaches 0.99: no ratio; the autotuned setting missed its target on these queries.
    assert at_99["vs_best_scann_grid"] is None and at_99["within_1_5x_of_grid"] is None
    assert at_99["best_peer"] == "faiss_hnsw" and not at_99["meets_target"]


def test_markdown_shows_best_settings_misses_and_goals():
    rows = [
        _row("scann", 0.96, 1000, params={"num_leaves": 9, "leaves_to_search": 3, "reorder": 50}),
        _row("faiss_hnsw", 0.93, 800, params={"M": 32, "ef_search": 16}),
        _row("scann_autotune", 0.94, 600, target=0.95, params={"leaves_to_search": 2, "reorder": 30}),
    ]
    best = search_summary.best_per_target(rows, [0.95])
    dataset = {"name": "tiny", "rows": 1000, "dim": 8, "num_queries": 10, "results": rows, "best": best}
    dataset["autotune"] = search_summary.compare_autotune(rows, best)
    text = search_markdown.markdown({"options": {"targets": [0.95], "k": 10}, "datasets": [dataset]})
    lines = text.splitlines()
    assert lines[0] == "### tiny: 1,000 × 8, 10 queries, top-10"
    grid_line = next(line for line in lines if line.startswith("| ScaNN tree"))
    assert "1,000 (1.00) [leaves 3, reorder 50; 0.960]" in grid_line
    assert next(line for line in lines if line.startswith("| faiss HNSW")).endswith("| — |")
    assert "[leaves 2, reorder 30; 0.940] misses" in next(line for line in lines if "autotune" in line)
    assert "0.60× the best ScaNN grid QPS (goal ≥ 0.67×: NOT met)" in text


def test_matmul_floor_matches_exact_search():
    data = clustered_unit_vectors(600, 16, 5, seed=1, noise=1.0)
    db, queries = data[:500], data[500:]
    _, exact = exact_search(queries, db, 10)
    assert recall_vs_exact_at_k(matmul_top_k(queries, db, 10, chunk=32), exact, 10) == 1.0


def _top_level_imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }


def test_faiss_is_imported_only_inside_the_faiss_runners():
    modules = [pathlib.Path(sb.__file__), *pathlib.Path(search_peers.__file__).parent.glob("*.py")]
    assert any(path.name == "faiss_ivfpq.py" for path in modules)  # The glob found the runners.
    for path in modules:
        assert "faiss" not in _top_level_imports(path), path
    assert "import faiss" in (pathlib.Path(search_peers.__file__).parent / "faiss_common.py").read_text()


def test_end_to_end_without_faiss(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError.
    out = tmp_path / "results.json"
    argv = ["--synthetic_rows", "3000", "--dim", "16", "--synthetic_queries", "200", "--clusters", "30"]
    argv += ["--methods", "exact_search", "exact_matmul", "scann", "--brute_force_below", "1000"]
    argv += ["--repeats", "1", "--single_queries", "5", "--exact_search_single_queries", "2"]
    argv += ["--reorder_multiples", "2", "10", "--out", str(out)]
    report = sb.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert {"date", "command", "machine", "versions", "options", "datasets", "markdown"} <= report.keys()
    assert report["machine"]["cores"] >= 1 and "cpu_model" in report["machine"]
    (dataset,) = report["datasets"]
    assert (dataset["rows"], dataset["dim"], dataset["num_queries"]) == (3000, 16, 200)
    methods = [r["method"] for r in dataset["results"]]
    assert methods[:2] == ["exact_search", "exact_matmul"] and methods.count("scann_autotune") == 2
    assert all(r["recall"] == 1.0 for r in dataset["results"][:2])
    assert {sw["fixed"]["reorder"] for sw in dataset["grid"]} == {20, 100}
    grid_points = sum(len(sw["measured"]) for sw in dataset["grid"])
    assert methods.count("scann") == grid_points
    for row in dataset["results"]:
        assert {
            "recall",
            "batch_qps",
            "latency_p50_ms",
            "latency_queries",
            "build_s",
            "bytes_per_vector",
        } <= row.keys()
    assert dataset["best"]["0.99"]["exact_search"]["recall"] == 1.0
    assert [a["target"] for a in dataset["autotune"]] == [0.95, 0.99]
    assert all(a["best_peer"] in ("exact_search", "exact_matmul") for a in dataset["autotune"])  # No faiss.
