"""The machine and library versions a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import subprocess
from typing import Any


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory and the thread/BLAS environment, which all move the numbers."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    model = ""
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    meminfo = pathlib.Path("/proc/meminfo")
    mem_kib = 0
    if meminfo.exists():
        mem_kib = next(
            (
                int(line.split()[1])
                for line in meminfo.read_text().splitlines()
                if line.startswith("MemTotal:")
            ),
            0,
        )
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "XLA_FLAGS"))}
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "environment": env,
    }


def versions() -> dict[str, str | None]:
    """Versions of the libraries measured, and the commit of this repository."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("numpy", "scann", "faiss-cpu"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    try:
        out["rejepa_jax_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=pathlib.Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["rejepa_jax_commit"] = None
    return out
