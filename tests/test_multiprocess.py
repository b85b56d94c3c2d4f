"""Two local processes (gloo collectives, coordinator on 127.0.0.1) train like one process."""

from __future__ import annotations

import os
import subprocess
import sys
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
