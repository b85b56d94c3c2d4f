"""Timing the compiled train step and the matrix-multiply peak it is compared with.

Shared by `train_throughput` (CPU, fake devices) and `accelerator` (GPU/TPU), so both measure the
step training runs (`trainer.jit_train_step`) the same way. Importing this module does not
configure JAX's devices; each entry point does that itself.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax import run_setup, sharding, trainer


def matmul_peak_flops(dtype: jnp.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of one jit-compiled size^3 matrix product (median of `repeats`)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def random_host_batch(run: run_setup.RunSetup, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of the step's shapes: normal images and masks from the run's own sampler.

    Multi-view batches get masks drawn per view, as the data pipeline draws them.
    """
    shapes = run.batch
    batch_size = shapes["image"].shape[0]
    views = shapes["context_idx"].shape[1] if len(shapes["context_idx"].shape) == 3 else 0
    masks = [[run.sampler.sample(rng) for _ in range(max(views, 1))] for _ in range(batch_size)]
    batch = {
        name: rng.normal(size=shapes[name].shape).astype(np.float32)
        for name in ("image", "local_image")
        if name in shapes
    }
    for key, which in (("context_idx", 0), ("target_idx", 1)):
        stacked = np.stack([np.stack([m[which] for m in row]) for row in masks])
        batch[key] = stacked if views else stacked[:, 0]
    return batch


def time_train_step(config, steps: int) -> dict[str, float]:
    """Images/s and XLA FLOPs of the real train step on two alternating device-resident batches."""
    run = run_setup.build_run(config)
    rng = np.random.default_rng(0)
    host_batches = [random_host_batch(run, rng) for _ in range(2)]
    with jax.set_mesh(run.mesh):
        batches = [sharding.global_batch(b, run.mesh) for b in host_batches]
        state = jax.jit(run.init_fn, out_shardings=run.state_sharding)(jax.random.key(0))
        compile_start = time.perf_counter()
        step = trainer.jit_train_step(config, run).lower(run.abstract_state, run.batch).compile()
        compile_seconds = time.perf_counter() - compile_start
        cost = step.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        state, metrics = step(state, batches[0])  # Warm-up.
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = step(state, batches[i % 2])
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / steps
    flops = float(cost["flops"]) * run.mesh.size  # cost_analysis counts one device's program.
    return {
        "images_per_second": config.batch_size / seconds,
        "step_seconds": seconds,
        "flops_per_step": flops,
        "flops_per_second": flops / seconds,
        "compile_seconds": compile_seconds,
    }
