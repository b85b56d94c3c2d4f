"""`--dry_run`: every config's train step compiles on its mesh and reports FLOPs and memory."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import CONFIG_NAMES, REPO, load_config

from rejepa_jax import cost_report

pytestmark = pytest.mark.slow  # Each test compiles full-size train steps.


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_compiles_and_reports_its_cost(name):
    config = load_config(name, "")
    report = cost_report.compile_cost(config)
    assert report.num_devices == 8 and report.platform == "cpu"
    assert report.flops_per_step > 0
    assert report.flops_per_image == pytest.approx(report.flops_per_step / config.batch_size)
    # A forward + backward ViT step costs at least 6 x params x tokens per image... for the context
    # tokens alone; the full-image target forward adds 2 x params x all tokens.
    assert report.flops_per_image > 2 * report.param_count
    assert (
        report.param_bytes_per_device > 0
        and report.optimizer_bytes_per_device >= report.param_bytes_per_device
    )
    assert report.peak_bytes_per_device > report.param_bytes_per_device
    text = cost_report.format_report(report)
    assert "FLOPs per image" in text and "peak memory estimate" in text


def test_fsdp_divides_the_state_bytes_per_device():
    replicated = cost_report.compile_cost(load_config("demo", ""))
    config = load_config("demo", "")
    config.unlock()
    config.mesh.data, config.mesh.fsdp = 1, 8
    sharded = cost_report.compile_cost(config)
    assert sharded.param_bytes_per_device < replicated.param_bytes_per_device / 4
    assert sharded.flops_per_step == pytest.approx(replicated.flops_per_step, rel=0.05)


def test_dry_run_command_line_prints_the_report_without_a_workdir():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rejepa_jax.main",
            "--config",
            "configs/demo.py",
            "--dry_run",
            "--dry_run_devices=4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(4 cpu devices), global batch 64" in done.stdout
    assert "FLOPs per step" in done.stdout and "per device: params" in done.stdout
