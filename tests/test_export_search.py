"""Checkpoint -> index -> search: round trip, atomic replacement, and every mismatch error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_training_run import tiny_demo

from rejepa_jax import config_lib, trainer
from rejepa_jax.retrieval import manifest
from rejepa_jax.retrieval.exporter import ExportOptions, export_index
from rejepa_jax.retrieval.index_searcher import IndexSearcher, QueryError, format_results

REPO = Path(__file__).resolve().parent.parent


def test_archive_images_find_themselves_with_score_one(index_dir):
    searcher = IndexSearcher(index_dir)
    assert searcher.manifest.count == 800 and searcher.descriptors.shape == (800, 64)
    assert searcher.manifest.scann["kind"] == "brute_force" and searcher.manifest.measured_recall == 1.0
    rows = [0, 150, 799]
    paths = [Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[r]) for r in rows]
    results = searcher.search(searcher.descriptors_for_images(paths), k=3)
    for row, hits in zip(rows, results, strict=True):
        assert hits[0].id == str(searcher.ids[row])
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].label == searcher.manifest.class_names[int(searcher.labels[row])]
    # By id: the item itself is left out and its neighbours follow in score order.
    descriptors, own_rows = searcher.descriptors_for_ids([str(searcher.ids[150])])
    hits = searcher.search(descriptors, k=5, exclude_rows=own_rows)[0]
    assert len(hits) == 5 and str(searcher.ids[150]) not in [h.id for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert '"rank": 1' in format_results(["q"], [hits], "jsonl")


def test_manifest_records_what_the_index_is(index_dir, trained):
    record = manifest.load(index_dir)
    assert record.checkpoint_step == 2 and record.encoder == "target"
    assert record.workdir == str(trained.absolute()) and record.dimension == 64
    assert record.normalisation.startswith("mean-pooled tokens, L2-normalised")
    assert set(record.files) >= {
        "descriptors.npy",
        "ids.npy",
        "labels.npy",
        "encoder.npz",
        "manifest.json",
    } - {"manifest.json"}
    assert record.config["model"]["width"] == 64 and len(record.model_fingerprint) == 64


def test_pca_whitened_export_round_trips(trained, tmp_path):
    out = tmp_path / "pca"
    export_index(config_lib.load_json(trained / "config.json"), trained, out, ExportOptions(pca_dim=16))
    searcher = IndexSearcher(out)
    assert searcher.manifest.dimension == 16 and searcher.descriptors.shape == (800, 16)
    np.testing.assert_allclose(np.linalg.norm(searcher.descriptors, axis=1), 1.0, rtol=1e-5)
    path = Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[42])
    hit = searcher.search(searcher.descriptors_for_images([path]), k=1)[0][0]
    assert hit.id == str(searcher.ids[42]) and hit.score == pytest.approx(1.0, abs=1e-4)


def test_standardised_export_matches_numpy_and_round_trips(trained, index_dir, tmp_path):
    out = tmp_path / "std"
    config = config_lib.load_json(trained / "config.json")
    export_index(config, trained, out, ExportOptions(standardise=True))
    searcher, plain = IndexSearcher(out), IndexSearcher(index_dir)
    assert searcher.manifest.dimension == plain.manifest.dimension == searcher.manifest.pca_dim
    assert "standardised per dimension" in searcher.manifest.normalisation
    raw = np.asarray(plain.descriptors, np.float64)  # L2-normalised, not standardised.
    expected = (raw - raw.mean(0)) / raw.std(0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(searcher.descriptors, expected, atol=2e-4)
    path = Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[42])
    hit = searcher.search(searcher.descriptors_for_images([path]), k=1)[0][0]
    assert hit.id == str(searcher.ids[42]) and hit.score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="not both"):
        export_index(config, trained, tmp_path / "both", ExportOptions(standardise=True, pca_dim=8))


def test_default_export_is_the_recipes_descriptor_the_online_encoder(trained, index_dir, tmp_path):
    out = tmp_path / "context"
    config = config_lib.load_json(trained / "config.json")
    # The default recipe lists the context encoder first: export indexes it unless told otherwise.
    assert config_lib.load_config_file(str(REPO / "configs" / "demo.py")).eval.encoders[0] == "context"
    config.unlock()
    config.eval.encoders = ("context", "target")
    export_index(config, trained, out, ExportOptions())
    context, target = IndexSearcher(out), IndexSearcher(index_dir)
    assert context.manifest.encoder == "context" and target.manifest.encoder == "target"
    # After two steps with EMA momentum 0.996 the two encoders differ, so their descriptors do.
    assert np.abs(context.descriptors - target.descriptors).max() > 1e-4
    params = trainer.restore_final_params(config, trained)
    path = Path(config_lib.SAMPLE_ROOT) / str(context.ids[7])
    hit = context.search(context.descriptors_for_images([path]), k=1)[0][0]
    assert hit.id == str(context.ids[7]) and hit.score == pytest.approx(1.0, abs=1e-4)
    assert params["encoder"].keys() == params["target"].keys()


def _copy(index_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    return copy


def test_tampered_missing_or_extra_files_are_refused(index_dir, tmp_path):
    copy = _copy(index_dir, tmp_path)
    ids = copy / "ids.npy"
    ids.write_bytes(ids.read_bytes()[:-8] + b"tampered")
    with pytest.raises(manifest.IndexIntegrityError, match=r"ids\.npy was modified"):
        IndexSearcher(copy)
    shutil.rmtree(copy)
    copy = _copy(index_dir, tmp_path)
    (copy / "labels.npy").unlink()
    with pytest.raises(manifest.IndexIntegrityError, match=r"labels\.npy is missing"):
        IndexSearcher(copy)
    shutil.rmtree(copy)
    copy = _copy(index_dir, tmp_path)
    (copy / "scann" / "scann_docids.pkl").write_bytes(b"not loaded")
    with pytest.raises(manifest.IndexIntegrityError, match="scann_docids.pkl"):
        IndexSearcher(copy)
    with pytest.raises(manifest.IndexIntegrityError, match="manifest.json is missing"):
        IndexSearcher(tmp_path)


def test_unknown_id_and_wrong_dimension_are_query_errors(index_dir):
    searcher = IndexSearcher(index_dir)
    known = str(searcher.ids[3])
    with pytest.raises(QueryError, match="not in the index.*Did you mean"):
        searcher.descriptors_for_ids([known.replace(".jpg", "9.jpg")])
    with pytest.raises(QueryError, match="dimension 64"):
        searcher.search(np.ones((1, 32), np.float32), k=3)


def test_a_different_model_is_a_model_mismatch(index_dir, tmp_path):
    other = tmp_path / "other"
    trainer.train_and_evaluate(tiny_demo(total_steps=2, seed=5), other)
    searcher = IndexSearcher(index_dir, workdir=other)
    image = Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[0])
    with pytest.raises(QueryError, match="Model mismatch"):
        searcher.descriptors_for_images([image])
    copy = _copy(index_dir, tmp_path)
    tampered = manifest.load(copy)
    tampered.model_fingerprint = "0" * 64
    manifest.write(copy, tampered)
    with pytest.raises(QueryError, match="Model mismatch"):
        IndexSearcher(copy).descriptors_for_images([image])


def test_search_command_line(index_dir, tmp_path):
    searcher = IndexSearcher(index_dir)
    queries = tmp_path / "queries.txt"
    queries.write_text(f"# two queries\n{Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[7])}\n")
    command = [sys.executable, "-m", "rejepa_jax.search", "--index", str(index_dir), "-k", "2"]
    done = subprocess.run(
        [*command, "--queries", str(queries)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "   1   1.0000" in done.stdout and str(searcher.ids[7]) in done.stdout
    bad = subprocess.run(
        [*command, "--id", "no/such.jpg"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode != 0 and "Id 'no/such.jpg' is not in the index" in bad.stderr


def test_killed_export_leaves_the_previous_index_intact(trained, index_dir, tmp_path):
    out = _copy(index_dir, tmp_path)
    before = manifest.load(out)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rejepa_jax.export",
            "--workdir",
            str(trained),
            "--out",
            str(out),
            "--pca_dim=8",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".copy.tmp-*/*.raw")):  # Descriptors are being written.
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    after = manifest.load(out)  # Verifies every checksum.
    assert after == before and after.pca_dim == 0
    assert list(tmp_path.glob(".copy.tmp-*"))  # The partial export is left aside...
    manifest.remove_stale_staging(out)
    assert not list(tmp_path.glob(".copy.tmp-*"))  # ...and cleaned up by the next export.


def test_an_interrupted_publish_is_rolled_back(tmp_path):
    final = tmp_path / "index"
    final.mkdir()
    (final / "a").write_text("old")
    staging = manifest.staging_dir(final)
    (staging / "a").write_text("new")
    os.rename(final, tmp_path / ".index.old-12345678")  # Killed between publish's two renames.
    manifest.remove_stale_staging(final)
    assert (final / "a").read_text() == "old" and not list(tmp_path.glob(".index.*"))
    staging = manifest.staging_dir(final)
    (staging / "a").write_text("new")
    manifest.publish(staging, final)
    assert (final / "a").read_text() == "new" and not list(tmp_path.glob(".index.*"))
