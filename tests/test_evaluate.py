"""The retrieval benchmark: report contents, index vs exact, baselines, pictures, exact mode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from rejepa_jax.evaluation import retrieval_metrics
from rejepa_jax.evaluation.retrieval_report import (
    archive_from_index,
    archive_from_workdir,
    default_report_dir,
    evaluate,
)
from rejepa_jax.retrieval import manifest
from rejepa_jax.retrieval.exact_search import exact_search

KS = [5, 10, 20]


def _check_metrics(report: dict) -> None:
    for k in KS:
        for key in (
            f"p@{k}",
            f"r@{k}",
            f"ndcg@{k}",
            *(f"map@{k}/{n}" for n in retrieval_metrics.NORMALISATIONS),
        ):
            assert 0.0 <= report[key] <= 1.0, key


@pytest.mark.slow
def test_report_has_model_index_and_baselines_with_pictures(index_dir, tmp_path):
    out = tmp_path / "report"
    report = evaluate(archive_from_index(index_dir), "query", out, ks=KS)
    assert set(report["descriptors"]) == {
        "rejepa (exact)",
        "rejepa (index)",
        "color_histogram",
        "random_init",
    }
    for metrics in report["descriptors"].values():
        _check_metrics(metrics)
    # Brute force: the index ranks exactly like exact search.
    assert report["index"]["recall@10"] == pytest.approx(1.0, abs=1e-3)
    assert report["descriptors"]["rejepa (index)"]["p@10"] == pytest.approx(
        report["descriptors"]["rejepa (exact)"]["p@10"], abs=2e-3
    )
    run = report["index"]["runs"][0]
    assert run["batch_qps"] > 0 and run["latency_ms_p99"] >= run["latency_ms_p50"] > 0
    assert run["bytes_per_vector"] >= 64 * 4  # At least the float32 vectors.
    # The colour histogram separates EuroSAT classes far above chance (0.1).
    assert report["descriptors"]["color_histogram"]["p@5"] > 0.3
    assert report["meta"]["num_queries"] == 200 and report["meta"]["num_archive"] == 800
    for figure in report["figures"]:
        with Image.open(out / figure["path"]) as picture:
            assert picture.size[0] > 200 and picture.size[1] > 200
    assert {f["path"] for f in report["figures"]} == {"gallery.png", "per_class.png", "projection.png"}
    markdown = (out / "report.md").read_text()
    assert "retrieved" in markdown and "min_k_r" in markdown and "total" in markdown
    assert json.loads((out / "report.json").read_text())["descriptors"].keys() == report["descriptors"].keys()


@pytest.mark.slow
def test_exact_mode_from_a_checkpoint_matches_the_exported_index(trained, index_dir, tmp_path):
    from_index = evaluate(archive_from_index(index_dir), "query", tmp_path / "a", ks=KS, baselines=())
    exact_archive = archive_from_workdir(trained, encoder="target")  # The encoder index_dir holds.
    exact = evaluate(exact_archive, "query", tmp_path / "b", ks=KS, baselines=())
    assert set(exact["descriptors"]) == {"rejepa (exact)"} and "index" not in exact
    for key, value in from_index["descriptors"]["rejepa (exact)"].items():
        assert exact["descriptors"]["rejepa (exact)"][key] == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_exact_mode_evaluates_either_encoder(trained, tmp_path):
    target = archive_from_workdir(trained, encoder="target")
    context = archive_from_workdir(trained, encoder="context")
    assert target.descriptors.shape == context.descriptors.shape
    assert np.abs(target.descriptors - context.descriptors).max() > 1e-4
    # Without --encoder, the run's first eval.encoders (the tiny test run lists only the target).
    default = archive_from_workdir(trained)
    assert default.meta["encoder"] == "target"
    np.testing.assert_array_equal(default.descriptors, target.descriptors)
    with pytest.raises(ValueError, match="expected 'target' or 'context'"):
        archive_from_workdir(trained, encoder="predictor")


@pytest.mark.slow
def test_other_query_splits_and_the_command_line(index_dir, tmp_path):
    # The archive's own split as queries: every query's nearest neighbour is itself.
    report = evaluate(
        archive_from_index(index_dir), "archive.csv", tmp_path / "self", ks=[1, 5], baselines=()
    )
    assert report["descriptors"]["rejepa (exact)"]["p@1"] == 1.0
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rejepa_jax.evaluate",
            "--index",
            str(index_dir),
            "--queries",
            "query",
            "--ks",
            "5,10",
            "--baselines=",
            "--out",
            str(tmp_path / "cli"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gallery.png" in done.stdout and (tmp_path / "cli" / "report.md").is_file()


def test_ranking_report_equals_retrieval_report_for_the_exact_ranking():
    rng = np.random.default_rng(0)
    queries, archive = rng.normal(size=(20, 8)), rng.normal(size=(60, 8))
    q_labels, a_labels = rng.integers(0, 3, 20), rng.integers(0, 3, 60)
    expected = retrieval_metrics.retrieval_report(
        queries, q_labels, archive, a_labels, [1, 5], multi_label=False
    )
    _, ranking = exact_search(queries, archive, 5)
    per_query: dict = {}
    got = retrieval_metrics.ranking_report(
        ranking, q_labels, a_labels, [1, 5], multi_label=False, per_query=per_query
    )
    assert got == expected
    assert per_query["p@5"].shape == (20,) and per_query["p@5"].mean() == pytest.approx(got["p@5"])
    # A ranking shorter than K counts the missing ranks as not relevant.
    short = retrieval_metrics.ranking_report(ranking[:, :2], q_labels, a_labels, [5], multi_label=False)
    assert short["p@5"] <= expected["p@5"]


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"rejepa_jax.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_readme_commands_in_order_leave_the_index_searchable(trained, tmp_path):
    """export -> search -> evaluate -> search again, as README.md lists them, on one index."""
    index = tmp_path / "INDEX"
    done = _command("export", "--workdir", str(trained), "--out", str(index), "--encoder", "target")
    assert done.returncode == 0, done.stderr[-2000:]
    some_id = str(np.load(index / "ids.npy")[5])
    search = ("search", "--index", str(index), "--id", some_id, "-k", "3")
    first = _command(*search)
    assert first.returncode == 0 and some_id not in first.stdout.split("id\n", 1)[1], first.stderr[-2000:]
    done = _command("evaluate", "--index", str(index), "--queries", "query", "--ks", "5,10", "--baselines=")
    assert done.returncode == 0, done.stderr[-2000:]
    report = tmp_path / "INDEX.eval_query"  # Beside the index, not inside it.
    assert (report / "report.md").is_file() and (report / "gallery.png").is_file()
    assert f"written to {report}" in done.stdout
    assert set(manifest.listed_files(index)) == set(manifest.load(index).files)
    again = _command(*search)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout == first.stdout


@pytest.mark.slow
def test_a_report_inside_an_index_is_refused(index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    with pytest.raises(ValueError, match="inside the index"):
        evaluate(archive_from_index(copy), "query", copy / "eval_query", ks=KS, baselines=())
    assert not (copy / "eval_query").exists()
    assert manifest.load(copy).count == 800  # Still a valid index.
    done = _command("evaluate", "--index", str(copy), "--out", str(copy / "report"))
    assert done.returncode == 1 and f"Report folder {copy / 'report'} is inside the index" in done.stderr
    assert default_report_dir("archive.csv", index_dir=copy) == tmp_path / "index.eval_archive"
    assert default_report_dir("query", index_dir=f"{copy}/") == tmp_path / "index.eval_query"
    assert default_report_dir("query", workdir=tmp_path / "run") == tmp_path / "run" / "eval_query"
