"""Which restore failures set a checkpoint aside, and what readers and a restarted run may do.

Only a step whose files are proven damaged is renamed to `<step>.unreadable`, and only by the
trainer; every other failure stops with its cause and leaves the folder as it is; a run does not
start again from step 0 over set-aside steps unless told to; readers never change the folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import REPO

from rejepa_jax import checkpoint, config_lib, encoder_restore, trainer

# configs/demo.py:runlocal shrunk like helpers.tiny_demo, as flags and as a config.
OVERRIDES = {
    "total_steps": 4,
    "log_every_steps": 1,
    "checkpoint.every_steps": 2,
    "checkpoint.async_save": False,
    "mesh.data": 1,
    "model.width": 64,
    "model.num_heads": 2,
    "model.depth": 1,
    "model.predictor_width": 32,
    "eval.baselines": (),
    "eval.encoders": ("target",),
    "eval.ks": (5,),
}


def _config(**extra):
    config = config_lib.load_config_file(f"{REPO / 'configs' / 'demo.py'}:runlocal")
    config.unlock()
    for key, value in {**OVERRIDES, **extra}.items():
        section, _, leaf = key.rpartition(".")
        node = config
        for part in filter(None, section.split(".")):
            node = node[part]
        node[leaf] = value
    config.lock()
    return config


def _command(workdir: Path, *extra: str) -> list[str]:
    flags = [
        f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}"
        for key, value in OVERRIDES.items()
    ]
    return [
        sys.executable,
        "-m",
        "rejepa_jax.main",
        "--config",
        "configs/demo.py:runlocal",
        "--workdir",
        str(workdir),
        *flags,
        *extra,
    ]


def _main(workdir: Path, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *_command(workdir, *extra)], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every path under `root` with its mtime and size: any rename, deletion or write changes it."""
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_mtime_ns, p.lstat().st_size if p.is_file() else 0)
        for p in root.rglob("*")
    )


def _damage(step_dir: Path) -> list[str]:
    """Truncates every array data file of a step (what a crash of the disk or a copy leaves)."""
    damaged = []
    for path in sorted((step_dir / "state").rglob("*")):
        if path.is_file() and "/d/" in str(path) and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            damaged.append(str(path.relative_to(step_dir)))
    assert damaged
    return damaged


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run of the command's config, with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("trained")
    trainer.train_and_evaluate(_config(), workdir)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    return workdir


@pytest.fixture
def workdir(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# Errors seen when restoring a real checkpoint after damaging it (truncated, emptied or deleted
# files, garbage bytes), or after making its files unreadable (chmod 000 as a non-root user).
_SPEC = ' [tensorstore_spec=\'{"driver":"zarr"}\']'
_TS = 'Error reading "params.x/0.0" in OCDBT database at local file "/w/4/state/": '


def _wrapped(message: str) -> Exception:
    """How Orbax raises a TensorStore read error: a plain Exception whose cause is the ValueError."""
    try:
        raise Exception("Encountered error while reading array index") from ValueError(message)
    except Exception as error:
        return error


@pytest.mark.parametrize(
    ("error", "damaged"),
    [
        (
            _wrapped(
                "OUT_OF_RANGE: " + _TS + "Requested byte range [0, 15150) is not valid for value of size 0"
            ),
            1,
        ),
        (_wrapped("FAILED_PRECONDITION: " + _TS + "Truncated Zstd-compressed stream; at byte 0"), 1),
        (
            ValueError("DATA_LOSS: Error decoding manifest: Encoded length (0) is less than minimum" + _SPEC),
            1,
        ),
        (
            ValueError(
                'NOT_FOUND: Error reading Byte range [0, 20031) of local file "/w/4/state/d/f1"' + _SPEC
            ),
            1,
        ),
        (json.JSONDecodeError("Unterminated string starting at", '{"next_', 1), 1),
        (UnicodeDecodeError("utf-8", b"\x80", 0, 1, "invalid start byte"), 1),
        (checkpoint.DamagedCheckpointError("missing state/_METADATA"), 1),
        (_wrapped("PERMISSION_DENIED: " + _TS + "Failed to open: Permission denied [os_error_code='13']"), 0),
        (_wrapped("UNKNOWN: " + _TS + "Input/output error [os_error_code='5']"), 0),
        (_wrapped("FAILED_PRECONDITION: " + _TS + "Device or resource busy [os_error_code='16']"), 0),
        (ValueError("RESOURCE_EXHAUSTED: Error writing: No space left on device [os_error_code='28']"), 0),
        (ValueError("FAILED_PRECONDITION: Something else is not ready"), 0),
        (PermissionError(errno.EACCES, "Permission denied", "/w/4/state/_METADATA"), 0),
        (OSError(errno.EIO, "Input/output error"), 0),
        (MemoryError(), 0),
        (KeyError("exhausted"), 0),  # A grain iterator state that does not fit the pipeline.
        (TypeError("'<' not supported between instances of 'str' and 'int'"), 0),
        (ValueError("pytree structure error: different types at key path"), 0),
    ],
)
def test_only_errors_about_the_files_contents_count_as_damage(error, damaged):
    assert bool(checkpoint.damage_evidence(error)) == bool(damaged)


@pytest.mark.slow
def test_errors_that_prove_no_damage_stop_with_their_cause_and_change_nothing(workdir, monkeypatch):
    before = _snapshot(workdir)
    # A data-pipeline setting changed since the save: the grain iterator state no longer fits.
    with pytest.raises(checkpoint.CheckpointRestoreError, match="step 4 .* could not be restored") as error:
        trainer.train_and_evaluate(_config(**{"data.num_workers": 1}), workdir)
    assert isinstance(error.value.__cause__, KeyError)
    assert "data-pipeline setting" in str(error.value)
    assert _snapshot(workdir) == before

    for failure in (MemoryError(), OSError(errno.EIO, "Input/output error")):

        def restore(self, step, *args, failure=failure, **kwargs):
            raise failure

        monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
        with pytest.raises(checkpoint.CheckpointRestoreError, match=type(failure).__name__) as error:
            trainer.train_and_evaluate(_config(), workdir)
        assert error.value.__cause__ is failure
        assert _snapshot(workdir) == before


def _unreadable_for_this_process() -> tuple[str, ...] | None:
    """A command prefix under which chmod 000 denies reading (root ignores it), or None."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("unshare") and subprocess.run(["unshare", "--user", "true"]).returncode == 0:
        return ("unshare", "--user")  # Same uid, but no capability to bypass file permissions.
    return None


@pytest.mark.slow
def test_permission_denied_stops_the_command_and_renames_nothing(workdir):
    prefix = _unreadable_for_this_process()
    if prefix is None:
        pytest.skip("running as root without user namespaces: chmod cannot make a file unreadable")
    data = workdir / "checkpoints" / "4" / "state" / "ocdbt.process_0" / "d"
    largest = max(data.iterdir(), key=lambda p: p.stat().st_size)
    largest.chmod(0)
    before = _snapshot(workdir)
    done = _main(workdir, prefix=prefix)
    after = _snapshot(workdir)
    assert after == before  # Not renamed aside, no step trained or saved.
    largest.chmod(0o644)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "CheckpointRestoreError" in done.stderr and "could not be restored" in done.stderr
    assert "Permission denied" in done.stderr


# Restoring a step whose many array files are truncated: Orbax's restore stops at the first read
# error and closes its event loop while tensorstore still has reads in flight; as those finish, their
# callbacks find the loop closed and Python reports "Event loop is closed" as unraisable. The error
# has already been raised and handled by then (these tests assert what happens next), so the report
# is expected here and filtered by its message only.
_LATE_READS_ON_CLOSED_LOOP = pytest.mark.filterwarnings(
    "ignore:(?s)Exception ignored in.*Event loop is closed:pytest.PytestUnraisableExceptionWarning"
)


@_LATE_READS_ON_CLOSED_LOOP
@pytest.mark.slow
def test_no_start_from_step_zero_over_set_aside_steps_unless_asked(workdir):
    checkpoints = workdir / "checkpoints"
    damaged = {step: _damage(checkpoints / step) for step in ("2", "4")}
    kept = {step: _files(checkpoints / step) for step in damaged}
    metrics = (workdir / "metrics.jsonl").read_text()

    # First run: both steps are damaged, set aside, and the run stops instead of training.
    with pytest.raises(checkpoint.NoUsableCheckpointError, match="restart_despite_unreadable=True"):
        trainer.train_and_evaluate(_config(), workdir)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2.unreadable", "4.unreadable"]

    # The same command again: still refuses, with the way out in the error.
    again = _main(workdir)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "error: No readable checkpoint is left" in again.stderr
    assert "--config.checkpoint.restart_despite_unreadable=True" in again.stderr
    assert (workdir / "metrics.jsonl").read_text() == metrics  # Nothing trained.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2.unreadable", "4.unreadable"]

    # Asked to: trains from step 0 and keeps the set-aside steps with all their files.
    restarted = _main(workdir, "--config.checkpoint.restart_despite_unreadable=True")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "Retrieval at step 4" in restarted.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "2.unreadable", "4", "4.unreadable"]
    for step, files in kept.items():
        assert _files(checkpoints / f"{step}.unreadable") == files
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r][-4:] == [1, 2, 3, 4]


@_LATE_READS_ON_CLOSED_LOOP
@pytest.mark.slow
def test_readers_restore_read_only_and_change_nothing(workdir, caplog):
    checkpoints = workdir / "checkpoints"
    # What a live run's folder can hold: an asynchronous save still being written.
    in_flight = checkpoints / "6.orbax-checkpoint-tmp-1733300000000000"
    (in_flight / "state").mkdir(parents=True)
    (in_flight / "state" / "partial").write_bytes(b"not yet renamed into place")
    config = _config()
    _damage(checkpoints / "4")
    if os.geteuid() != 0:  # Root writes through read-only modes; the snapshot below still checks.
        for path in [checkpoints, *checkpoints.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    before = _snapshot(workdir)
    try:
        step, params = encoder_restore.restore_params(config, workdir)
        assert step == 2  # The damaged newest step is skipped, reported, and left in place.
        assert "Checkpoint step 4" in caplog.text and "left in place (read-only)" in caplog.text
        assert encoder_restore.restore_params(config, workdir, step=2)[0] == 2
        with pytest.raises(checkpoint.DamagedCheckpointError, match="step 4"):
            encoder_restore.restore_params(config, workdir, step=4)
        for a, b in zip(
            jax.tree.leaves(encoder_restore.restore_params(config, workdir)[1]),
            jax.tree.leaves(params),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        assert _snapshot(workdir) == before
        assert (in_flight / "state" / "partial").read_bytes() == b"not yet renamed into place"
    finally:
        for path in [checkpoints, *checkpoints.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
