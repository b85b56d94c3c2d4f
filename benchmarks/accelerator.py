"""Accelerator benchmark in one go: train-step MFU, export throughput, search QPS.

    bash benchmarks/gpu.sh               # installs jax[cuda12], then runs this module
    python -m benchmarks.accelerator --tiny   # the same code path on a CPU, in seconds

On whatever devices JAX sees (all of them, one `data` mesh axis):
1. the bfloat16 and float32 peak of a jit-compiled matrix product, measured here;
2. the REJEPA train step of ViT-B/16 at 224 px in bfloat16: images/s, FLOPs per step from XLA's
   cost analysis, achieved FLOP/s and MFU against the measured bfloat16 peak;
3. export throughput: images/s of the export command on a synthetic archive, against the encoder
   forward alone;
4. search: batch QPS of exact search on the device (matmul + top-k) and of the auto-tuned ScaNN
   index on the host CPUs, over synthetic clustered descriptors of the model's width.
Prints one table; `--out` writes JSON. Sized to finish within 8 minutes on one H100/H200.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import step_timing
from rejepa_jax import config_lib, trainer
from rejepa_jax.retrieval import scann_index

REPO = Path(__file__).resolve().parent.parent


def benchmark_config(tiny: bool) -> config_lib.ml_collections.ConfigDict:
    """ViT-B/16 at 224 px, bf16, synthetic data (a one-block ViT-Ti/8 at 64 px with --tiny)."""
    config = config_lib.base_config()
    config_lib.shrink_to_synthetic_runlocal(
        config, variant="B/16", steps=1, batch_size=8 * jax.device_count()
    )
    config.model.depth = 0  # The full ViT-B depth.
    config.model.dtype = "bfloat16"
    config.model.predictor_width, config.model.predictor_depth = 384, 6
    config.model.predictor_heads = 12
    config.data.image_size = 224
    config.batch_size = 64 * jax.device_count()
    config.eval.batch_size = 256 * jax.device_count()
    if tiny:
        config.model.variant, config.model.depth = "Ti/8", 1
        config.model.predictor_width, config.model.predictor_depth, config.model.predictor_heads = 96, 1, 3
        config.data.image_size = 64
        config.batch_size = config.eval.batch_size = 8 * jax.device_count()
    return config


def export_rate(config, archive: int) -> dict[str, float]:
    """Trains one step on synthetic data, then exports an archive of `archive` synthetic images."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer.train_and_evaluate(config, Path(tmp) / "run")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rejepa_jax.export",
                "--workdir",
                str(Path(tmp) / "run"),
                "--out",
                str(Path(tmp) / "index"),
                f"--set=data.synthetic_size={archive}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    line = next(line for line in done.stderr.splitlines() if "Embedded" in line and "images/s" in line)
    return {"images_per_second": float(line.split("(")[-1].split()[0])}


def search_rates(dim: int, rows: int, queries: int) -> dict[str, float]:
    db = scann_index.clustered_unit_vectors(rows, dim, num_clusters=max(10, rows // 1000), seed=0, noise=1.0)
    q = scann_index.clustered_unit_vectors(
        queries, dim, num_clusters=max(10, rows // 1000), seed=0, noise=1.0
    )
    exact = jax.jit(lambda a, b: jax.lax.top_k(a @ b.T, 10))
    device_db = jnp.asarray(db)
    exact(jnp.asarray(q), device_db)[0].block_until_ready()
    start = time.perf_counter()
    exact(jnp.asarray(q), device_db)[0].block_until_ready()
    exact_qps = queries / (time.perf_counter() - start)
    settings, recall, _ = scann_index.autotune(db, target_recall=0.95, brute_force_below=min(20_000, rows))
    searcher = scann_index.build_searcher(db, settings)
    speed = scann_index.benchmark(searcher, q, 10, settings)
    return {
        "exact_device_qps": exact_qps,
        "scann_qps": speed["batch_qps"],
        "scann_recall": recall,
        "scann_kind": settings.kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Small sizes, to check the code path on a CPU.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    size = 1024 if args.tiny else 8192
    peak_bf16 = step_timing.matmul_peak_flops(jnp.bfloat16, size, repeats=10)
    peak_f32 = step_timing.matmul_peak_flops(jnp.float32, size, repeats=10)
    config = benchmark_config(args.tiny)
    train = step_timing.time_train_step(config, 2 if args.tiny else args.steps)
    export = export_rate(config, 512 if args.tiny else 20_000)
    search = search_rates(
        64 if args.tiny else 768, 5_000 if args.tiny else 1_000_000, 200 if args.tiny else 10_000
    )
    devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    rows = [
        ("devices", devices),
        ("matmul peak bf16 / f32", f"{peak_bf16 / 1e12:.1f} / {peak_f32 / 1e12:.1f} TFLOP/s"),
        (
            f"train step {config.model.variant} @ {config.data.image_size} px bf16",
            f"{train['images_per_second']:.0f} images/s",
        ),
        (
            "train FLOP/s, MFU vs bf16 peak",
            f"{train['flops_per_second'] / 1e12:.1f} TFLOP/s, {train['flops_per_second'] / peak_bf16:.0%}",
        ),
        ("export", f"{export['images_per_second']:.0f} images/s"),
        ("exact search on device", f"{search['exact_device_qps']:.0f} QPS"),
        (
            f"ScaNN ({search['scann_kind']}, recall@10 {search['scann_recall']:.3f})",
            f"{search['scann_qps']:.0f} QPS",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "devices": devices,
                    "peak_bf16": peak_bf16,
                    "peak_f32": peak_f32,
                    "train": train,
                    "export": export,
                    "search": search,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
