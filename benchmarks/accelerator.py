"""Accelerator benchmark in one go: train-step MFU, export throughput, search QPS.

    bash benchmarks/gpu.sh               # installs jax[cuda12], then runs this module
    python -m benchmarks.accelerator --tiny   # the same code path on a CPU, in seconds

On whatever devices JAX sees (all of them, one `data` mesh axis):
1. the bfloat16 and float32 peak of a jit-compiled matrix product, measured here;
2. the REJEPA train step of ViT-B/16 at 224 px in bfloat16: images/s, FLOPs per step from XLA's
   cost analysis, achieved FLOP/s and MFU against the measured bfloat16 peak;
3. export throughput: images/s of the export command on a synthetic archive, against the encoder
   forward alone;
4. bfloat16 numerics: from the same initial state and the same batches, the train-step losses in
   bfloat16 and float32 side by side, and the cosine between the two dtypes' pooled descriptors;
5. the EuroSAT benchmark model (ViT-Ti/8 at 64 px, batch 64) in float32 and bfloat16: images/s
   and MFU, i.e. how long the quality-per-compute budgets take on this device;
6. search: batch QPS of exact search on the device (matmul + top-k) and of the auto-tuned ScaNN
   index on the host CPUs, over synthetic clustered descriptors of the model's width.
Prints one table; `--out` writes JSON after every section, so a run cut short keeps what it measured;
a section that fails is recorded with its error and the next one runs. Sized to finish within about
5 minutes on one H100/H200 (`--search_rows` scales the last section).
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
import numpy as np

from benchmarks import step_timing
from benchmarks.synthetic_vectors import clustered_unit_vectors
from rejepa_jax import config_lib, run_setup, runlocal, sharding, trainer
from rejepa_jax import state as state_lib
from rejepa_jax.retrieval import index_autotune, index_speed, scann_index

REPO = Path(__file__).resolve().parent.parent


def benchmark_config(tiny: bool) -> config_lib.ml_collections.ConfigDict:
    """ViT-B/16 at 224 px, bf16, synthetic data (a one-block ViT-Ti/8 at 64 px with --tiny)."""
    config = config_lib.base_config()
    runlocal.shrink_to_synthetic(config, variant="B/16", steps=1, batch_size=8 * jax.device_count())
    config.model.depth = 0  # The full ViT-B depth.
    config.model.dtype = "bfloat16"
    config.model.predictor_width, config.model.predictor_depth = 384, 6
    config.model.predictor_heads = 12
    config.data.image_size = 224
    config.batch_size = 256 * jax.device_count()
    config.eval.batch_size = 256 * jax.device_count()
    if tiny:
        config.model.variant, config.model.depth = "Ti/8", 1
        config.model.predictor_width, config.model.predictor_depth, config.model.predictor_heads = 96, 1, 3
        config.data.image_size = 64
        config.batch_size = config.eval.batch_size = 8 * jax.device_count()
    return config


def eurosat_config(dtype: str, tiny: bool) -> config_lib.ml_collections.ConfigDict:
    """The quality benchmark's model: ViT-Ti/8 at 64 px, predictor width 192, batch 64 per device."""
    config = config_lib.base_config()
    runlocal.shrink_to_synthetic(config, variant="Ti/8", steps=1, batch_size=64 * jax.device_count())
    config.model.depth = 1 if tiny else 0
    config.model.dtype = dtype
    config.model.predictor_width = 192
    config.data.image_size = 64
    return config


def bf16_numerics(config, steps: int) -> dict[str, float | list[float]]:
    """Losses of `steps` train steps in float32 and bfloat16 from one initial state on the same batches.

    Params are float32 in both (bfloat16 is the compute dtype), so both runs start from identical
    weights; the float32 run uses full-precision matrix products. The descriptor cosine compares the
    two dtypes' pooled encoder outputs at that start.
    """
    losses: dict[str, list[float]] = {}
    pooled: dict[str, np.ndarray] = {}
    for dtype in ("float32", "bfloat16"):
        config = config_lib.from_dict(config.to_dict())
        config.model.dtype = dtype
        run = run_setup.build_run(config)
        rng = np.random.default_rng(0)
        host_batches = [step_timing.random_host_batch(run, rng) for _ in range(steps)]
        # The float32 reference multiplies in full float32 (GPUs otherwise default to TF32 products).
        precision = "highest" if dtype == "float32" else None
        with jax.set_mesh(run.mesh), jax.default_matmul_precision(precision):
            state = jax.jit(run.init_fn, out_shardings=run.state_sharding)(jax.random.key(0))
            first = sharding.global_batch(host_batches[0], run.mesh)
            params = state_lib.encoder_params(state, "target")
            tokens = jax.jit(lambda p, x, enc=run.encoder: enc.apply({"params": p}, x))(
                params, first["image"]
            )
            pooled[dtype] = np.asarray(tokens.astype(jnp.float32).mean(axis=1))
            step = trainer.jit_train_step(config, run)
            losses[dtype] = []
            for host_batch in host_batches:
                state, metrics = step(state, sharding.global_batch(host_batch, run.mesh))
                losses[dtype].append(float(metrics["loss"]))
    a, b = pooled["float32"], pooled["bfloat16"]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    f32, bf16 = np.asarray(losses["float32"]), np.asarray(losses["bfloat16"])
    return {
        "loss_float32": f32.tolist(),
        "loss_bfloat16": bf16.tolist(),
        "max_relative_loss_difference": float(np.max(np.abs(bf16 - f32) / np.abs(f32))),
        "descriptor_cosine_min": float(cosine.min()),
        "descriptor_cosine_mean": float(cosine.mean()),
    }


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
    db = clustered_unit_vectors(rows, dim, num_clusters=max(10, rows // 1000), seed=0, noise=1.0)
    q = clustered_unit_vectors(queries, dim, num_clusters=max(10, rows // 1000), seed=0, noise=1.0)
    exact = jax.jit(lambda a, b: jax.lax.top_k(a @ b.T, 10))
    device_db = jnp.asarray(db)
    exact(jnp.asarray(q), device_db)[0].block_until_ready()
    start = time.perf_counter()
    exact(jnp.asarray(q), device_db)[0].block_until_ready()
    exact_qps = queries / (time.perf_counter() - start)
    settings, recall, _ = index_autotune.autotune(db, target_recall=0.95, brute_force_below=min(20_000, rows))
    searcher = scann_index.build_searcher(db, settings)
    speed = index_speed.measure_speed(searcher, q, 10, settings)
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
    parser.add_argument("--numerics_steps", type=int, default=10)
    parser.add_argument("--search_rows", type=int, default=200_000)
    parser.add_argument("--skip", default="", help="Comma-separated sections to skip.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    size = 1024 if args.tiny else 8192
    config = benchmark_config(args.tiny)
    results: dict[str, object] = {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}
    sections = {
        "peak": lambda: {
            "bf16": step_timing.matmul_peak_flops(jnp.bfloat16, size, repeats=10),
            "f32": step_timing.matmul_peak_flops(jnp.float32, size, repeats=10),
        },
        "train": lambda: step_timing.time_train_step(config, 2 if args.tiny else args.steps),
        "numerics": lambda: bf16_numerics(config, 2 if args.tiny else args.numerics_steps),
        "eurosat_f32": lambda: step_timing.time_train_step(
            eurosat_config("float32", args.tiny), 2 if args.tiny else 50
        ),
        "eurosat_bf16": lambda: step_timing.time_train_step(
            eurosat_config("bfloat16", args.tiny), 2 if args.tiny else 50
        ),
        "export": lambda: export_rate(config, 512 if args.tiny else 4_096),
        "search": lambda: search_rates(
            64 if args.tiny else 768, 5_000 if args.tiny else args.search_rows, 200 if args.tiny else 10_000
        ),
    }
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    for name, measure in sections.items():
        if name in skip:
            continue
        start = time.perf_counter()
        try:
            results[name] = measure()
        except Exception as e:  # One failing section must not lose the others' numbers.
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"[{time.perf_counter() - start:6.1f} s] {name}: {results[name]}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
    print(summary(results, config))


def summary(results: dict, config) -> str:
    """The measured sections as one aligned table (sections that failed or were skipped say so)."""
    peak = results.get("peak", {}).get("bf16")

    def step_row(key: str, label: str) -> tuple[str, str]:
        train = results.get(key, {})
        if "images_per_second" not in train:
            return label, str(train.get("error", "not run"))
        mfu = f", MFU {train['flops_per_second'] / peak:.1%}" if peak else ""
        return (
            label,
            f"{train['images_per_second']:.0f} images/s, {train['flops_per_second'] / 1e12:.1f} TFLOP/s{mfu}",
        )

    numerics = results.get("numerics", {})
    search = results.get("search", {})
    rows = [
        ("devices", results["devices"]),
        (
            "matmul peak bf16 / f32",
            f"{results['peak']['bf16'] / 1e12:.1f} / {results['peak']['f32'] / 1e12:.1f} TFLOP/s"
            if "bf16" in results.get("peak", {})
            else "not run",
        ),
        step_row("train", f"train step {config.model.variant} @ {config.data.image_size} px bf16"),
        (
            "bf16 vs f32: max rel. loss diff, descriptor cos min",
            f"{numerics['max_relative_loss_difference']:.2e}, {numerics['descriptor_cosine_min']:.5f}"
            if "descriptor_cosine_min" in numerics
            else str(numerics.get("error", "not run")),
        ),
        step_row("eurosat_f32", "train step Ti/8 @ 64 px f32"),
        step_row("eurosat_bf16", "train step Ti/8 @ 64 px bf16"),
        (
            "export",
            f"{results['export']['images_per_second']:.0f} images/s"
            if "images_per_second" in results.get("export", {})
            else str(results.get("export", {}).get("error", "not run")),
        ),
        (
            "exact search on device / ScaNN on host",
            f"{search['exact_device_qps']:.0f} / {search['scann_qps']:.0f} QPS "
            f"({search['scann_kind']}, recall@10 {search['scann_recall']:.3f})"
            if "scann_qps" in search
            else str(search.get("error", "not run")),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    main()
