"""Two local processes (gloo collectives, coordinator on 127.0.0.1) train like one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rejepa_jax.metric_writer import read_metrics

REPO = Path(__file__).resolve().parent.parent
MAIN_ARGS = [
    "--config",
    "configs/demo.py:runlocal",
    "--config.total_steps=5",
    "--config.log_every_steps=1",
    "--config.checkpoint.every_steps=5",
    "--config.eval.baselines=()",
]


def _losses(workdir: Path) -> np.ndarray:
    return np.array([r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r])


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
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
    assert len(_losses(tmp_path / "two")) == 5
    # Only process 0 prints and writes; each process saved its own data-iterator state.
    assert "Retrieval at step 5" in two.stdout
    assert "Retrieval at step" not in (tmp_path / "rejepa_process_1.log").read_text()
    iterator_states = sorted(
        p.name for p in (tmp_path / "two" / "checkpoints" / "5" / "data_iter").glob("process_*")
    )
    assert iterator_states == ["process_0-of-2.json", "process_1-of-2.json"]


def test_sigterm_stops_every_process_after_the_same_step(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "LOG_DIR": str(tmp_path)}
    args = [
        *MAIN_ARGS,
        "--config.total_steps=400",
        "--config.batch_size=64",
        "--config.checkpoint.every_steps=100",
    ]
    launcher = subprocess.Popen(
        [
            "bash",
            "launch/local.sh",
            "--processes",
            "2",
            "--devices",
            "2",
            "--",
            *args,
            "--workdir",
            str(workdir),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= 12 for r in _rows(workdir)):
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)  # The launcher forwards it to both processes.
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-3000:]
    stopped = int(stdout.split("Stopped by SIGTERM after step ")[1].split(";")[0])
    assert stopped % 10 == 0 and stopped < 400  # The hosts agree every preemption_check_every steps.
    assert stopped in [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    other = (tmp_path / "rejepa_process_1.log").read_text()
    assert f"Stopped by SIGTERM after step {stopped}" in other


def _rows(workdir: Path) -> list[dict]:
    try:
        return read_metrics(workdir)
    except (FileNotFoundError, ValueError):
        return []
