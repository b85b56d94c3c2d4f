"""What export may replace, how it publishes, and what loading an index trusts.

Export commands run as real processes (exit codes, files left on disk); crashes are injected into
those processes at the exact step of the swap they test.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from rejepa_jax import config_lib
from rejepa_jax.evaluation.retrieval_report import archive_from_index
from rejepa_jax.retrieval import index_publication, manifest, scann_index
from rejepa_jax.retrieval.exporter import ExportOptions, export_index
from rejepa_jax.retrieval.index_searcher import IndexSearcher, QueryError

pytestmark = pytest.mark.slow  # Every test reads the session's trained run or its exported index.

_RUN_EXPORT = (
    "import runpy, sys\n"
    "sys.argv = ['export'] + sys.argv[1:]\n"
    "runpy.run_module('rejepa_jax.export', run_name='__main__')\n"
)
# Where the filesystem has no atomic exchange, the swap is two renames: kill the process after the
# old index went aside and before the new one took its place.
CRASH_BETWEEN_RENAMES = """
import os
from rejepa_jax.retrieval import index_publication, manifest
index_publication._exchange = lambda a, b: False
_rename = os.rename
def _crashing_rename(src, dst):
    if ".tmp-" in os.fspath(src) and os.path.lexists(manifest.aside_dir(dst)):
        os._exit(9)
    _rename(src, dst)
os.rename = _crashing_rename
"""
# Kill the process right after the atomic exchange, before the previous index is deleted.
CRASH_AFTER_EXCHANGE = """
import os
from rejepa_jax.retrieval import index_publication
_exchange = index_publication._exchange
index_publication._exchange = lambda a, b: os._exit(9 if _exchange(a, b) else 8)
"""


def _export(workdir: Path, out: Path, *flags: str, prelude: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", prelude + _RUN_EXPORT, "--workdir", str(workdir), "--out", str(out), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy(index_dir: Path, destination: Path) -> Path:
    shutil.copytree(index_dir, destination)
    return destination


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


# ---- What --out may be ----


def test_export_refuses_a_training_run_or_a_folder_of_other_files(trained, tmp_path):
    run_files = _snapshot(trained)
    done = _export(trained, trained)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: Refusing to write the index to {trained}: it holds the training run" in done.stderr
    assert _snapshot(trained) == run_files  # Checkpoints and config untouched.
    assert not list(trained.parent.glob(f".{trained.name}.*"))  # No lock, no staging left behind.

    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not an index")
    done = _export(trained, other)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"Refusing to replace {other}: it is not empty and not an index" in done.stderr
    assert (other / "holiday.jpg").read_bytes() == b"not an index"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_export_replaces_only_an_empty_folder_or_an_index_of_its_own_files(trained, index_dir, tmp_path):
    config = config_lib.load_json(trained / "config.json")
    options = ExportOptions(encoder="target")

    def refused(out: Path, match: str) -> None:
        with pytest.raises(index_publication.ExportTargetError, match=match):
            export_index(config, trained, out, options)

    # An index that also holds a user's files (e.g. a report written inside it): refused, kept.
    index = _copy(index_dir, tmp_path / "index")
    (index / "eval_query").mkdir()
    (index / "eval_query" / "report.md").write_text("# my report")
    refused(index, r"also holds files that are not part of the index \(eval_query/report\.md\)")
    assert (index / "eval_query" / "report.md").read_text() == "# my report"
    # A folder whose manifest.json is not an index manifest, a file, a folder holding the run.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"name": "my project"}')
    refused(fake, "Refusing to replace .*fake: .*not a valid index manifest")
    (tmp_path / "file").write_text("data")
    refused(tmp_path / "file", "exists and is not a folder")
    refused(trained.parent, "it holds the training run")
    # An empty folder is filled; an index of export's own files is replaced.
    empty = tmp_path / "empty"
    empty.mkdir()
    export_index(config, trained, empty, options)
    assert manifest.load(empty).count == 800
    (index / "eval_query" / "report.md").unlink()
    (index / "eval_query").rmdir()
    export_index(config, trained, index, ExportOptions(encoder="target", pca_dim=8))
    assert manifest.load(index).pca_dim == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "fake", "file", "index"]


# ---- Publication: one export at a time, and a kill at any point ----


def test_a_second_export_to_the_same_out_refuses_while_the_first_runs(trained, index_dir, tmp_path):
    out = _copy(index_dir, tmp_path / "index")
    before = manifest.load(out)
    with index_publication.ExportLock(out):  # The first export: it holds the lock and has a staging folder.
        first = index_publication.staging_dir(out)
        (first / "descriptors.raw").write_bytes(b"partial")
        with pytest.raises(index_publication.ExportTargetError, match="Another export"):
            index_publication.ExportLock(out).acquire()
        done = _export(trained, out)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: Another export to {out} is running" in done.stderr
    assert (first / "descriptors.raw").read_bytes() == b"partial"  # Not removed as stale.
    assert manifest.load(out) == before
    with index_publication.ExportLock(out):  # Released: the next export may run.
        pass


def test_a_kill_between_the_two_renames_leaves_the_old_index(trained, index_dir, tmp_path):
    out = _copy(index_dir, tmp_path / "index")
    before = manifest.load(out)
    crashed = _export(trained, out, "--pca_dim=8", prelude=CRASH_BETWEEN_RENAMES)
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    assert not out.exists() and (tmp_path / ".index.old" / "manifest.json").is_file()
    (new,) = tmp_path.glob(".index.tmp-*")
    assert manifest.load(new).pca_dim == 8  # The new index was whole too; the old one wins.
    # Loaders find the old index meanwhile...
    searcher = IndexSearcher(out)
    assert searcher.manifest == before and searcher.descriptors.shape == (800, 64)
    assert manifest.load(out) == before
    # ...and the next export puts it back, then replaces it; nothing is left beside it.
    done = _export(trained, out, "--pca_dim=8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert IndexSearcher(out).manifest.pca_dim == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_kill_right_after_the_atomic_swap_leaves_the_new_index(trained, index_dir, tmp_path):
    out = _copy(index_dir, tmp_path / "index")
    before = manifest.load(out)
    crashed = _export(trained, out, "--pca_dim=8", prelude=CRASH_AFTER_EXCHANGE)
    if crashed.returncode == 8:
        pytest.skip("This filesystem has no atomic exchange (renameat2 RENAME_EXCHANGE).")
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    assert IndexSearcher(out).manifest.pca_dim == 8
    (previous,) = tmp_path.glob(".index.tmp-*")
    assert manifest.load(previous) == before
    with index_publication.ExportLock(out):  # What the next export does first.
        index_publication.recover_interrupted(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert manifest.load(out).pca_dim == 8


# ---- Loading: exactly the checked bytes ----


def test_each_index_file_is_read_once_and_loaded_from_the_checked_bytes(index_dir, tmp_path, monkeypatch):
    copy = _copy(index_dir, tmp_path / "index")
    expected = {name: 1 for name in [*manifest.load(copy).files, "manifest.json"]}
    opened: collections.Counter[str] = collections.Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike):
            path = Path(os.path.abspath(file))
            if path.is_relative_to(copy):
                opened[path.relative_to(copy).as_posix()] += 1
        return real_open(file, *args, **kwargs)

    loaded_from = []
    real_load = scann_index.load
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(scann_index, "load", lambda d: (loaded_from.append(Path(d)), real_load(d))[1])
    searcher = IndexSearcher(copy)
    assert dict(opened) == expected  # Hashed and parsed from one read.
    (scann_dir,) = loaded_from
    assert not scann_dir.is_relative_to(copy) and not scann_dir.exists()  # A private copy, gone.
    assert searcher.search(np.asarray(searcher.descriptors[:1]), k=1)[0][0].id == str(searcher.ids[0])


def test_a_later_edit_of_the_files_does_not_change_a_loaded_index(index_dir, tmp_path):
    copy = _copy(index_dir, tmp_path / "index")
    searcher = IndexSearcher(copy)
    descriptors = np.array(searcher.descriptors)
    with (copy / "descriptors.npy").open("r+b") as f:  # In place: a memory map would see it.
        f.seek(-64 * 4, os.SEEK_END)
        f.write(np.full(64, 0.125, np.float32).tobytes())
    np.testing.assert_array_equal(searcher.descriptors, descriptors)
    with pytest.raises(manifest.IndexIntegrityError, match=r"descriptors\.npy was modified"):
        IndexSearcher(copy)


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_a_listed_file_is_refused_before_anything_is_loaded(
    index_dir, tmp_path, monkeypatch
):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Payload(marker))
    loads = []
    monkeypatch.setattr(scann_index, "load", lambda directory: loads.append(directory))
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(a))
    for name in ("scann/dataset.npy", "scann/scann_config.pb", "ids.npy", "encoder.npz"):
        copy = _copy(index_dir, tmp_path / name.replace("/", "_"))
        (copy / name).write_bytes(payload)
        with pytest.raises(manifest.IndexIntegrityError, match=rf"{name} was modified"):
            IndexSearcher(copy)
    assert not loads and not marker.exists()


def test_a_pickle_the_manifest_lists_is_still_never_unpickled(index_dir, tmp_path):
    marker = tmp_path / "unpickled"
    # A docid pickle beside the ScaNN files, listed with its checksum: the ScaNN loader refuses it.
    copy = _copy(index_dir, tmp_path / "docids")
    (copy / "scann" / "scann_docids.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    manifest.write(copy, manifest.load(copy, verify=False))
    with pytest.raises(scann_index.UnsafeIndexError, match="scann_docids.pkl"):
        IndexSearcher(copy)
    # A pickled object array in place of ids.npy, listed with its checksum: refused, not unpickled.
    copy = _copy(index_dir, tmp_path / "ids")
    np.save(copy / "ids.npy", np.array([_Payload(marker)] * 800, dtype=object), allow_pickle=True)
    manifest.write(copy, manifest.load(copy, verify=False))
    with pytest.raises(manifest.IndexIntegrityError, match=r"ids\.npy holds Python objects"):
        IndexSearcher(copy)
    assert not marker.exists()


def test_the_report_path_checks_the_encoder_fingerprint(index_dir, tmp_path):
    copy = _copy(index_dir, tmp_path / "index")
    with np.load(copy / "encoder.npz", allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1  # Same shapes, another model.
    np.savez(copy / "encoder.npz", **arrays)
    manifest.write(copy, manifest.load(copy, verify=False))  # Checksums agree; the fingerprint does not.
    with pytest.raises(QueryError, match="Model mismatch"):
        archive_from_index(copy)
    assert archive_from_index(index_dir).meta["num_index"] == 800


def test_an_index_exported_before_the_parameter_rename_is_refused_with_the_reason(index_dir, tmp_path):
    copy = _copy(index_dir, tmp_path / "old_format")
    text = (copy / manifest.MANIFEST).read_text()
    field = f'"format_version": {manifest.FORMAT_VERSION}'
    assert field in text
    (copy / manifest.MANIFEST).write_text(text.replace(field, '"format_version": 1'))
    with pytest.raises(
        manifest.IndexIntegrityError, match=r"renamed from encoder/block_\* to blocks/block_\*"
    ):
        IndexSearcher(copy)
    with pytest.raises(manifest.IndexIntegrityError, match="Export the index again"):
        archive_from_index(copy)
