"""Two local processes (gloo collectives, coordinator on 127.0.0.1) train like one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import REPO, loss_array

from rejepa_jax import config_lib, encoder_restore
from rejepa_jax.metric_writer import read_metrics

# Several JAX processes train: slow, and the `multiprocess` marker selects or skips them alone.
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
MAIN_ARGS = [
    "--config",
    "configs/demo.py:runlocal",
    "--config.total_steps=5",
    "--config.log_every_steps=1",
    "--config.checkpoint.every_steps=5",
    "--config.eval.baselines=()",
]


def test_two_processes_with_two_devices_each_match_one_process_with_four(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "LOG_DIR": str(tmp_path)}
    two = subprocess.run(
        [
            "bash",
            "launch/local.sh",
            "--processes",
            "2",
            "--devices",
            "2",
            "--",
            *MAIN_ARGS,
            "--workdir",
            str(tmp_path / "two"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:] + (tmp_path / "rejepa_process_1.log").read_text()[-3000:]

    one = subprocess.run(
        [sys.executable, "-m", "rejepa_jax.main", *MAIN_ARGS, "--workdir", str(tmp_path / "one")],
        cwd=REPO,
        env={**os.environ, "JAX_NUM_CPU_DEVICES": "4"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    assert "over 4 devices, 2 processes" in two.stderr
    assert "over 4 devices, 1 processes" in one.stderr
    np.testing.assert_allclose(loss_array(tmp_path / "two"), loss_array(tmp_path / "one"), rtol=1e-5)
    assert len(loss_array(tmp_path / "two")) == 5
    # Only process 0 prints and writes; each process saved its own data-iterator state.
    assert "Retrieval at step 5" in two.stdout
    assert "Retrieval at step" not in (tmp_path / "rejepa_process_1.log").read_text()
    iterator_states = sorted(
        p.name for p in (tmp_path / "two" / "checkpoints" / "5" / "data_iter").glob("process_*")
    )
    assert iterator_states == ["process_0-of-2.json", "process_1-of-2.json"]


# Long enough to be signalled between the hosts' SIGTERM checks (every 10 steps), short to resume.
SIGTERM_ARGS = [
    *MAIN_ARGS,
    "--config.total_steps=40",
    "--config.checkpoint.every_steps=100",
    "--config.model.width=64",
    "--config.model.num_heads=2",
    "--config.model.depth=1",
    "--config.model.predictor_width=32",
    "--config.eval.encoders=('target',)",
    "--config.eval.ks=(5,)",
]


def _launch(tmp_path: Path, workdir: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable, "LOG_DIR": str(tmp_path)}
    command = ["bash", "launch/local.sh", "--processes", "2", "--devices", "2", "--"]
    return subprocess.Popen(
        [*command, *SIGTERM_ARGS, "--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _run_to_the_end(tmp_path: Path, workdir: Path) -> str:
    process = _launch(tmp_path, workdir)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:] + (tmp_path / "rejepa_process_1.log").read_text()[-3000:]
    assert "Retrieval at step 40" in stdout
    return stdout


def _final_params(workdir: Path) -> list[np.ndarray]:
    config = config_lib.load_config_file(f"{REPO / 'configs' / 'demo.py'}:runlocal")
    config.unlock()
    config.model.width, config.model.num_heads, config.model.depth = 64, 2, 1
    config.model.predictor_width = 32
    config.mesh.data = 1  # Restored onto one device of this process: the values do not depend on it.
    config.lock()
    return [np.asarray(leaf) for leaf in jax.tree.leaves(encoder_restore.restore_params(config, workdir)[1])]


def test_sigterm_stops_every_process_after_the_same_step_and_the_resumed_run_is_exact(tmp_path):
    workdir = tmp_path / "run"
    launcher = _launch(tmp_path, workdir)
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= 12 for r in _rows(workdir)):
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)  # The launcher forwards it to both processes.
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-3000:]
    stopped = int(stdout.split("Stopped by SIGTERM after step ")[1].split(";")[0])
    assert stopped % 10 == 0 and stopped < 40  # The hosts agree every preemption_check_every steps.
    assert stopped in [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    other = (tmp_path / "rejepa_process_1.log").read_text()
    assert f"Stopped by SIGTERM after step {stopped}" in other

    # The same command resumes on both processes and ends exactly where an uninterrupted run does:
    # same processes, devices and mesh, so the same reductions in the same order, and the resumed
    # run restores the state and each process's data-iterator position exactly. Hence bitwise.
    _run_to_the_end(tmp_path, workdir)
    _run_to_the_end(tmp_path, tmp_path / "uninterrupted")
    for got, want in zip(_final_params(workdir), _final_params(tmp_path / "uninterrupted"), strict=True):
        np.testing.assert_array_equal(got, want)
    losses = {r["step"]: r["train/loss"] for r in _rows(workdir) if "train/loss" in r}
    reference = {r["step"]: r["train/loss"] for r in _rows(tmp_path / "uninterrupted") if "train/loss" in r}
    assert losses == reference


def _rows(workdir: Path) -> list[dict]:
    try:
        return read_metrics(workdir)
    except (FileNotFoundError, ValueError):
        return []
