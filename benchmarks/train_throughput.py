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
import statistics
import time
from pathlib import Path

# Eight fake CPU devices for the sharded rows; must be set before JAX starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rejepa_jax import config_lib, sharding, trainer  # noqa: E402
from rejepa_jax.data import pipeline  # noqa: E402
from rejepa_jax.train_step import make_train_step  # noqa: E402

MODELS = {
    # name: (variant, image size, global batch, predictor width, predictor depth)
    "ViT-Ti/8 @ 64 px": ("Ti/8", 64, 64, 192, 6),
    "ViT-S/16 @ 224 px": ("S/16", 224, 16, 384, 6),
}


def matmul_peak_gflops(dtype: jnp.dtype, size: int = 4096, repeats: int = 5) -> float:
    """Median GFLOP/s of one jit-compiled size^3 matrix product."""
    a = jnp.ones((size, size), dtype)
    b = jnp.ones((size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


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


def step_throughput(config, steps: int) -> dict[str, float]:
    """Images/s and FLOPs of the real train step on device-resident random batches."""
    run = trainer.build_run(config)
    batch_sharding = {k: sharding.batch_sharding(run.mesh) for k in run.batch}
    step = jax.jit(
        make_train_step(config, encoder=run.encoder, predictor=run.predictor, optimizer=run.optimizer),
        in_shardings=(run.state_sharding, batch_sharding),
        out_shardings=(run.state_sharding, sharding.replicated(run.mesh)),
        donate_argnums=0,
    )
    rng = np.random.default_rng(0)
    host_batches = []
    for _ in range(2):
        masks = [run.sampler.sample(rng) for _ in range(config.batch_size)]
        host_batches.append(
            {
                "image": rng.normal(size=run.batch["image"].shape).astype(np.float32),
                "context_idx": np.stack([m[0] for m in masks]),
                "target_idx": np.stack([m[1] for m in masks]),
            }
        )
    with jax.set_mesh(run.mesh):
        batches = [sharding.global_batch(b, run.mesh) for b in host_batches]
        state = jax.jit(run.init_fn, out_shardings=run.state_sharding)(jax.random.key(0))
        compile_start = time.perf_counter()
        compiled = step.lower(run.abstract_state, run.batch).compile()
        compile_seconds = time.perf_counter() - compile_start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        state, metrics = step(state, batches[0])  # Warm-up.
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = step(state, batches[i % 2])
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / steps
    flops = float(cost["flops"]) * run.mesh.size
    return {
        "images_per_second": config.batch_size / seconds,
        "step_seconds": seconds,
        "flops_per_step": flops,
        "gflops_per_second": flops / seconds / 1e9,
        "compile_seconds": compile_seconds,
    }


def pipeline_throughput(config, batches: int) -> float:
    """Images/s of the grain train pipeline alone (real JPEGs of the embedded sample)."""
    run = trainer.build_run(config)
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

    peak32 = matmul_peak_gflops(jnp.float32)
    peak16 = matmul_peak_gflops(jnp.bfloat16)
    print(f"jnp.matmul 4096^3 peak: float32 {peak32:.0f} GFLOP/s, bfloat16 {peak16:.0f} GFLOP/s")
    rows = []
    for name in MODELS if not args.quick else list(MODELS)[:1]:
        for devices in (1, 8) if not args.quick else (1,):
            for dtype in ("float32", "bfloat16") if not args.quick else ("float32",):
                config = model_config(name, devices=devices, dtype=dtype)
                result = step_throughput(config, args.steps)
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
