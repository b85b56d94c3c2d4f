"""Training-step throughput against this machine's matrix-multiply peak, and input-pipeline speed.

    python -m benchmarks.train_throughput [--steps 10] [--out results.json] [--quick]

In one process (so every figure is measured under the same conditions):
1. the float32 (and bfloat16) peak of `jnp.matmul` on 4096 x 4096 matrices (GFLOP/s);
2. for ViT-Ti/8 at 64 px and ViT-S/16 at 224 px, on 1 and 8 (fake) devices, in float32 and bfloat16:
   the real train step (same jit, shardings and donation as training) on device-resident batches,
   images/s, FLOPs per step from XLA's cost analysis, achieved GFLOP/s and its fraction of the
   float32 matmul peak (MFU);
3. the grain input pipeline of each model's data settings on the embedded EuroSAT sample (JPEG
   decode, random-resized crop, flips, normalisation, masks): images/s, and its ratio to the step.

Eight fake devices share the same two cores; they measure the sharded code path, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

# Eight fake CPU devices for the sharded rows; must be set before JAX starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402

from benchmarks import step_timing  # noqa: E402
from rejepa_jax import config_lib, run_setup  # noqa: E402
from rejepa_jax.data import pipeline  # noqa: E402

MODELS = {
    # name: (variant, image size, global batch, predictor width, predictor depth)
    "ViT-Ti/8 @ 64 px": ("Ti/8", 64, 64, 192, 6),
    "ViT-S/16 @ 224 px": ("S/16", 224, 16, 384, 6),
}


def model_config(name: str, *, devices: int, dtype: str) -> config_lib.ml_collections.ConfigDict:
    variant, image_size, batch, predictor_width, predictor_depth = MODELS[name]
    config = config_lib.base_config()
    config.model.variant = variant
    config.model.dtype = dtype
    config.model.predictor_width = predictor_width
    config.model.predictor_depth = predictor_depth
    config.data.image_size = image_size
    config.data.root = config_lib.SAMPLE_ROOT
    config.data.train_split = "archive.csv"
    config.batch_size = batch
    config.mesh.data = devices
    config.total_steps = 1000
    return config


def pipeline_throughput(config, batches: int) -> float:
    """Images/s of the grain train pipeline alone (real JPEGs of the embedded sample)."""
    run = run_setup.build_run(config)
    iterator = pipeline.make_train_iterator(config, run.sampler)
    next(iterator)  # Start-up (threads, first reads) is not throughput.
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    iterator.close()
    return batches * config.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per row.")
    parser.add_argument("--pipeline_batches", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="Only ViT-Ti/8, float32, 1 device.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    args = parser.parse_args()

    peak32 = step_timing.matmul_peak_flops(jnp.float32, 4096) / 1e9
    peak16 = step_timing.matmul_peak_flops(jnp.bfloat16, 4096) / 1e9
    print(f"jnp.matmul 4096^3 peak: float32 {peak32:.0f} GFLOP/s, bfloat16 {peak16:.0f} GFLOP/s")
    rows = []
    for name in MODELS if not args.quick else list(MODELS)[:1]:
        for devices in (1, 8) if not args.quick else (1,):
            for dtype in ("float32", "bfloat16") if not args.quick else ("float32",):
                config = model_config(name, devices=devices, dtype=dtype)
                result = step_timing.time_train_step(config, args.steps)
                result["gflops_per_second"] = result.pop("flops_per_second") / 1e9
                result.update(model=name, devices=devices, dtype=dtype)
                result["mfu_vs_float32_matmul"] = result["gflops_per_second"] / peak32
                rows.append(result)
                print(
                    f"{name:18s} {devices} dev {dtype:8s} {result['images_per_second']:8.1f} img/s "
                    f"{result['gflops_per_second']:6.0f} GFLOP/s  MFU {result['mfu_vs_float32_matmul']:.0%}",
                    flush=True,
                )
        config = model_config(name, devices=1, dtype="float32")
        input_rate = pipeline_throughput(config, args.pipeline_batches)
        step_rate = next(r for r in rows if r["model"] == name and r["devices"] == 1)["images_per_second"]
        rows.append(
            {
                "model": name,
                "input_pipeline_images_per_second": input_rate,
                "ratio_to_step": input_rate / step_rate,
            }
        )
        print(
            f"{name:18s} input pipeline {input_rate:8.1f} img/s = {input_rate / step_rate:.1f}x the step",
            flush=True,
        )

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor(), "jax": jax.__version__},
        "matmul_peak_gflops": {"float32": peak32, "bfloat16": peak16},
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
