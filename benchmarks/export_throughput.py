"""Export speed against the encoder forward alone, and export peak memory against archive size.

    python -m benchmarks.export_throughput --workdir RUN [--sizes 2000 8000 32000] [--out results.json]

In one run:
1. the encoder forward alone: images/s of the jit-compiled pooled forward on a device-resident
   batch of the export's batch size (the ceiling export can reach);
2. `rejepa_jax.export` on the run's archive split: images/s of the embedding phase (data reading,
   decoding, forward, streaming to disk), and its ratio to (1) — the goal is within 10 %;
3. for synthetic archives of growing size (pass `--synthetic_workdir`, a tiny run on synthetic data),
   the peak resident memory of an export process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax import config_lib, sharding
from rejepa_jax.encoder_restore import restore_encoder
from rejepa_jax.retrieval.exporter import config_for_present_devices

REPO = Path(__file__).resolve().parent.parent
# Runs the export command and prints its peak resident memory (kB) as it exits; read by `peak_rss_kb`.
MEASURE_PEAK_RSS = (
    "import atexit, resource, runpy, sys\n"
    "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "atexit.register(lambda: print('PEAK_RSS_KB', peak(), flush=True))\n"
    "sys.argv = ['export'] + sys.argv[1:]\n"
    "runpy.run_module('rejepa_jax.export', run_name='__main__')\n"
)


def peak_rss_kb(stdout: str) -> int:
    """The peak resident memory a `MEASURE_PEAK_RSS` process printed."""
    return int(stdout.split("PEAK_RSS_KB")[1].split()[0])


def forward_only(workdir: Path, repeats: int = 10) -> dict[str, float]:
    """Images/s of the pooled encoder forward alone, at the export's batch size and sharding."""
    config = config_for_present_devices(config_lib.load_json(workdir / "config.json"))
    restored = restore_encoder(config, workdir, "target")
    params, run = restored.params, restored.run
    batch = config.eval.batch_size
    shape = (batch, config.data.image_size, config.data.image_size, config.data.channels)
    with jax.set_mesh(run.mesh):
        images = jax.device_put(
            np.random.default_rng(0).normal(size=shape).astype(np.float32), sharding.batch_sharding(run.mesh)
        )
        pool = jax.jit(
            lambda p, x: run.encoder.apply({"params": p}, x).astype(jnp.float32).mean(axis=1),
            out_shardings=sharding.replicated(run.mesh),
        )
        np.asarray(pool(params, images))
        start = time.perf_counter()
        for _ in range(repeats):
            np.asarray(pool(params, images))  # Includes the copy to the host, as export does.
        seconds = (time.perf_counter() - start) / repeats
    return {"batch": batch, "images_per_second": batch / seconds}


def export_run(workdir: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """Runs the export command; returns its embedding rate and peak memory."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK_RSS, "--workdir", str(workdir), "--out", str(out), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    rate = re.search(r"Embedded (\d+) images in ([\d.]+) s \(([\d.]+) images/s\)", done.stderr)
    return {
        "images": int(rate.group(1)),
        "embed_seconds": float(rate.group(2)),
        "images_per_second": float(rate.group(3)),
        "peak_rss_mb": peak_rss_kb(done.stdout) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="A trained run (its archive split).")
    parser.add_argument("--synthetic_workdir", type=Path, default=None, help="A run on synthetic data.")
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 8000, 32000])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/rejepa_export_benchmark"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    forward = forward_only(args.workdir)
    export = export_run(args.workdir, args.scratch / "archive", [])
    ratio = export["images_per_second"] / forward["images_per_second"]
    print(f"encoder forward alone: {forward['images_per_second']:.1f} images/s (batch {forward['batch']})")
    print(f"export embedding:      {export['images_per_second']:.1f} images/s = {ratio:.0%} of the forward")
    memory = []
    if args.synthetic_workdir:
        for size in args.sizes:
            row = export_run(
                args.synthetic_workdir,
                args.scratch / f"synthetic_{size}",
                [f"--set=data.synthetic_size={size}"],
            )
            memory.append({"archive_images": size, **row})
            print(
                f"archive {size:>7,} images: peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"{row['images_per_second']:.0f} images/s"
            )
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "devices": jax.device_count()},
        "forward": forward,
        "export": export,
        "export_over_forward": ratio,
        "memory": memory,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
