"""Checkpoint -> index -> search: round trip, atomic replacement, and every mismatch error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, tiny_demo

from rejepa_jax import config_lib, encoder_restore, trainer
from rejepa_jax.retrieval import index_publication, index_searcher, manifest
from rejepa_jax.retrieval.exporter import ExportOptions, export_index
from rejepa_jax.retrieval.index_searcher import IndexSearcher, QueryError, format_results
from rejepa_jax.retrieval.pca_whitening import PcaWhitening


@pytest.fixture(scope="module")
def pca_index(trained, tmp_path_factory):
    """The same archive exported PCA-whitened to 16 dimensions: an index of another dimension."""
    out = tmp_path_factory.mktemp("pca") / "pca16"
    export_index(config_lib.load_json(trained / "config.json"), trained, out, ExportOptions(pca_dim=16))
    return out


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_pca_whitened_export_round_trips(pca_index):
    searcher = IndexSearcher(pca_index)
    assert searcher.manifest.dimension == 16 and searcher.descriptors.shape == (800, 16)
    np.testing.assert_allclose(np.linalg.norm(searcher.descriptors, axis=1), 1.0, rtol=1e-5)
    path = Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[42])
    hit = searcher.search(searcher.descriptors_for_images([path]), k=1)[0][0]
    assert hit.id == str(searcher.ids[42]) and hit.score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
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


@pytest.mark.slow
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
    params = encoder_restore.restore_params(config, trained)[1]
    path = Path(config_lib.SAMPLE_ROOT) / str(context.ids[7])
    hit = context.search(context.descriptors_for_images([path]), k=1)[0][0]
    assert hit.id == str(context.ids[7]) and hit.score == pytest.approx(1.0, abs=1e-4)
    assert params["context_encoder"].keys() == params["target_encoder"].keys()


@pytest.mark.slow
def test_export_command_standardises_as_the_run_evaluated(trained, tmp_path):
    """Without --standardise, the command follows the run's eval.standardise (set by the recipes)."""
    for setting in (True, False):
        out = tmp_path / f"standardise_{setting}"
        command = [sys.executable, "-m", "rejepa_jax.export", "--workdir", str(trained), "--out", str(out)]
        done = subprocess.run(
            [*command, f"--set=eval.standardise={setting}"], cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        normalisation = manifest.load(out).normalisation
        assert ("standardised per dimension" in normalisation) == setting, normalisation


def _copy(index_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    return copy


@pytest.mark.slow
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
    shutil.rmtree(copy)
    # Only the top-level manifest.json is exempt from the extra-file check, not one in a subfolder.
    copy = _copy(index_dir, tmp_path)
    shutil.copy(copy / "manifest.json", copy / "scann" / "manifest.json")
    with pytest.raises(manifest.IndexIntegrityError, match=r"Unexpected file.*scann/manifest\.json"):
        IndexSearcher(copy)
    with pytest.raises(manifest.IndexIntegrityError, match=r"scann/manifest\.json"):
        manifest.load(copy)
    with pytest.raises(manifest.IndexIntegrityError, match="manifest.json is missing"):
        IndexSearcher(tmp_path)


@pytest.mark.slow
def test_unknown_id_and_wrong_dimension_are_query_errors(index_dir, pca_index, tmp_path):
    searcher, other = IndexSearcher(index_dir), IndexSearcher(pca_index)
    known = str(searcher.ids[3])
    with pytest.raises(QueryError, match="not in the index.*Did you mean"):
        searcher.descriptors_for_ids([known.replace(".jpg", "9.jpg")])
    # Real descriptors of one index (64-d) searched in a real index of another dimension (16-d).
    descriptors, _ = searcher.descriptors_for_ids([known])
    image = Path(config_lib.SAMPLE_ROOT) / known
    assert descriptors.shape == (1, 64) and other.manifest.dimension == 16
    with pytest.raises(QueryError, match=r"shape \(1, 64\) do not match the index dimension 16"):
        other.search(descriptors, k=3)
    with pytest.raises(QueryError, match=r"shape \(1, 16\) do not match the index dimension 64"):
        searcher.search(other.descriptors_for_images([image]), k=3)
    # An index whose whitening no longer gives its dimension: the query path's own check refuses.
    copy = tmp_path / "mixed"
    shutil.copytree(pca_index, copy)
    PcaWhitening(mean=np.zeros(64, np.float32), projection=np.eye(64, dtype=np.float32)).save(
        copy / "pca.npz"
    )
    manifest.write(
        copy, manifest.load(copy, verify=False)
    )  # Consistent checksums: only the dimension differs.
    with pytest.raises(QueryError, match="dimension 64 but the index has 16"):
        IndexSearcher(copy).descriptors_for_images([image])


@pytest.mark.slow
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


@pytest.mark.slow
def test_search_command_line(index_dir, tmp_path):
    searcher = IndexSearcher(index_dir)
    queries = tmp_path / "queries.txt"
    rows = [7, 8, 9]
    listed = "".join(f"{Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[r])}\n" for r in rows)
    queries.write_text(f"# three queries\n{listed}")
    command = [sys.executable, "-m", "rejepa_jax.search", "--index", str(index_dir), "-k", "2"]
    done = subprocess.run(
        [*command, "--queries", str(queries), "--batch_size", "2", "--format", "jsonl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hits = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    firsts = [hit for hit in hits if hit["rank"] == 1]
    assert [hit["id"] for hit in firsts] == [str(searcher.ids[r]) for r in rows]  # Over two batches.
    assert all(hit["score"] == pytest.approx(1.0, abs=1e-4) for hit in firsts)
    bad = subprocess.run(
        [*command, "--id", "no/such.jpg"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode != 0 and "Id 'no/such.jpg' is not in the index" in bad.stderr


@pytest.mark.slow
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
    with index_publication.ExportLock(out):  # ...and the dead export's lock does not block the next one,
        index_publication.recover_interrupted(out)
    assert not list(tmp_path.glob(".copy.*"))  # ...which cleans up.
    assert manifest.load(out) == before


def fake_index(folder: Path, content: str) -> Path:
    """A folder with one file `a` and a manifest listing it (what publication needs of an index)."""
    folder.mkdir()
    (folder / "a").write_text(content)
    record = manifest.Manifest(
        workdir="",
        checkpoint_step=0,
        encoder="target",
        model_fingerprint="",
        config={},
        dimension=1,
        count=1,
        normalisation="",
        split="archive",
        scann={},
        measured_recall=1.0,
        recall_k=1,
    )
    manifest.write(folder, record)
    return folder


def test_an_interrupted_publish_is_rolled_back(tmp_path, monkeypatch):
    final = fake_index(tmp_path / "index", "old")
    staging = index_publication.staging_dir(final)
    (staging / "a").write_text("new")
    aside = manifest.aside_dir(final)
    assert aside == tmp_path / ".index.old"
    os.rename(final, aside)  # Killed between the two renames of the non-atomic swap.
    assert manifest.resolve(final) == aside  # Loaders read the previous index meanwhile...
    with index_publication.ExportLock(final):
        index_publication.recover_interrupted(final)  # ...and the next export puts it back.
    assert (final / "a").read_text() == "old" and not list(tmp_path.glob(".index.*"))
    assert manifest.resolve(final) == final
    for exchange in (index_publication._exchange, lambda a, b: False):  # Atomic exchange, then two renames.
        staging = fake_index(tmp_path / ".index.tmp-0000", "new")
        monkeypatch.setattr(index_publication, "_exchange", exchange)
        index_publication.publish(staging, final)
        assert (final / "a").read_text() == "new" and not list(tmp_path.glob(".index.*"))
        (final / "a").write_text("old")
        manifest.write(final, manifest.load(final, verify=False))


@pytest.mark.slow
def test_query_images_are_decoded_and_embedded_in_fixed_size_batches(index_dir, monkeypatch):
    searcher = IndexSearcher(index_dir)
    rows = list(range(10))
    paths = [Path(config_lib.SAMPLE_ROOT) / str(searcher.ids[r]) for r in rows]
    encode = searcher._encoder()
    decoded, batches = [], []
    real_decode = index_searcher.decode_record
    monkeypatch.setattr(
        index_searcher, "decode_record", lambda *args: (decoded.append(args[0]), real_decode(*args))[1]
    )
    # (images in the batch, images decoded so far) each time the encoder is called.
    searcher._encode = lambda images: (batches.append((len(images), len(decoded))), encode(images))[1]
    results = list(searcher.search_images(paths, k=1, batch_size=4))
    assert batches == [(4, 4), (4, 8), (4, 10)]  # One size (the last batch padded), decoded lazily.
    assert [len(queries) for queries, _ in results] == [4, 4, 2]
    hits = [hits[0] for _, batch in results for hits in batch]
    assert [hit.id for hit in hits] == [str(searcher.ids[r]) for r in rows]
    assert all(hit.score == pytest.approx(1.0, abs=1e-4) for hit in hits)
    np.testing.assert_allclose(
        searcher.descriptors_for_images(paths, batch_size=3),
        np.asarray(searcher.descriptors)[rows],
        atol=1e-5,
    )
    single = searcher.descriptors_for_images(paths[:1])  # A single query is a batch of one.
    assert batches[-1][0] == 1 and single.shape == (1, 64)
    assert searcher.descriptors_for_images([]).shape == (0, 64) and not list(searcher.search_images([], k=1))
