"""The accelerator benchmark runs its whole code path on a CPU (--tiny); gpu.sh's commands are right."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # Python subprocesses, one of them a benchmark.


def test_accelerator_benchmark_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "accelerator.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    failed = {name: v["error"] for name, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not failed  # Sections record their errors instead of stopping the run: none may fail here.
    assert results["train"]["images_per_second"] > 0 and results["train"]["flops_per_step"] > 0
    for dtype in ("f32", "bf16"):
        assert results[f"eurosat_{dtype}"]["images_per_second"] > 0
    numerics = results["numerics"]
    assert len(numerics["loss_float32"]) == len(numerics["loss_bfloat16"]) == 2
    assert numerics["max_relative_loss_difference"] < 0.05 and numerics["descriptor_cosine_min"] > 0.99
    assert results["export"]["images_per_second"] > 0
    assert results["search"]["scann_recall"] >= 0.95 and results["search"]["exact_device_qps"] > 0
    assert "MFU" in done.stdout and "bf16 vs f32" in done.stdout


def test_gpu_script_installs_the_cuda_build_then_runs_the_benchmark():
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--out", "x.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DRY_RUN": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()[-2:]
    assert lines[0].endswith("pip install -q jax[cuda12]==0.10.2")
    assert lines[1].endswith("-m benchmarks.accelerator --out x.json")
