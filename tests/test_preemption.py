"""Real signals to a real training process: SIGTERM saves and exits 0; SIGKILL loses little."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import REPO, load_config

from rejepa_jax import encoder_restore, trainer

pytestmark = pytest.mark.slow  # Training subprocesses, signalled.
# A run slow enough (about 6 steps/s here) to be interrupted between its checkpoints.
OVERRIDES = {
    "total_steps": 60,
    "log_every_steps": 1,
    "batch_size": 64,
    "checkpoint.every_steps": 10,
    "mesh.data": 1,
    "eval.baselines": (),
    "eval.encoders": ("target",),
    "eval.ks": (5,),
}


def _flags() -> list[str]:
    return [
        f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}"
        for key, value in OVERRIDES.items()
    ]


def _config():
    config = load_config("demo")
    config.unlock()
    for key, value in OVERRIDES.items():
        section, _, leaf = key.rpartition(".")
        (config[section] if section else config)[leaf] = value
    config.lock()
    return config


def _command(workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rejepa_jax.main",
        "--config",
        "configs/demo.py:runlocal",
        "--workdir",
        str(workdir),
        *_flags(),
    ]


def _last_logged_step(workdir: Path) -> int:
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def _start_and_wait(workdir: Path, until_step: int) -> subprocess.Popen:
    process = subprocess.Popen(
        _command(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while _last_logged_step(workdir) < until_step:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training did not reach the step in time"
        time.sleep(0.02)
    return process


def _finish(workdir: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(workdir), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _assert_same_params(workdir: Path, reference: Path) -> None:
    config = _config()
    got = jax.tree.leaves(encoder_restore.restore_params(config, workdir)[1])
    want = jax.tree.leaves(encoder_restore.restore_params(config, reference)[1])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _finish(workdir)
    return workdir


def test_sigterm_finishes_the_step_saves_and_exits_zero(tmp_path, uninterrupted):
    process = _start_and_wait(tmp_path, until_step=13)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "Stopped by SIGTERM after step" in stdout
    stopped = int(stdout.split("Stopped by SIGTERM after step ")[1].split(";")[0])
    assert 13 <= stopped < 60
    assert _checkpoint_steps(tmp_path)[-1] == stopped  # Saved at the step it stopped, off-interval.
    assert "Retrieval at step" not in stdout

    _finish(tmp_path)
    _assert_same_params(tmp_path, uninterrupted)


def test_sigkill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path, uninterrupted):
    process = _start_and_wait(tmp_path, until_step=12)
    # Saves are asynchronous: kill only once the step-10 save has been renamed into place.
    deadline = time.monotonic() + 120
    while 10 not in _checkpoint_steps(tmp_path):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint at step 10"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    killed_at = _last_logged_step(tmp_path)
    assert process.returncode == -signal.SIGKILL
    last_checkpoint = _checkpoint_steps(tmp_path)[-1]
    # Every completed save survived; only a save still in flight at the kill (one interval) is lost.
    assert 10 <= last_checkpoint <= killed_at < last_checkpoint + 20

    done = _finish(tmp_path)
    assert "Retrieval at step 60" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # The steps after the last checkpoint were trained twice: before the kill and after resuming.
    assert [r["step"] for r in rows].count(last_checkpoint + 1) == 2
    _assert_same_params(tmp_path, uninterrupted)
    want = {
        r["step"]: r["train/loss"]
        for r in map(json.loads, (uninterrupted / "metrics.jsonl").read_text().splitlines())
        if "train/loss" in r
    }
    got = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}  # Last row per step wins.
    assert got == want


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size if p.is_file() else 0)
        for p in root.rglob("*")
    )


def test_sigterm_during_start_up_exits_zero_and_leaves_the_checkpoints(tmp_path, uninterrupted):
    # A run interrupted after its step-50 checkpoint (steps 40 and 50 kept).
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "60")
    (tmp_path / trainer.RESULTS_FILE).unlink()
    before = _snapshot(tmp_path)
    process = subprocess.Popen(
        _command(tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # The config is logged before the run is built and the checkpoint restored: signal right then.
    start_up = []
    for line in process.stderr:
        start_up.append(line)
        if "Config:" in line:
            break
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, "".join(start_up)[-2000:] + stderr[-3000:]
    assert "Stopped by SIGTERM during start-up, before step" in stdout
    assert "nothing was trained or saved" in stdout
    assert "Retrieval at step" not in stdout
    assert _snapshot(tmp_path) == before  # No checkpoint written, renamed or removed; no metrics.

    # Nothing was lost: the next run resumes at step 51 and ends where the uninterrupted one did.
    done = _finish(tmp_path)
    assert "Retrieval at step 60" in done.stdout
    _assert_same_params(tmp_path, uninterrupted)
