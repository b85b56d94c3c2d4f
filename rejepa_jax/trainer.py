"""The REJEPA training loop, in the order it runs.

1. Mesh, models, mask sampler, optimizer, data iterator.
2. Abstract state (jax.eval_shape) -> shardings -> state initialised already sharded, or restored
   from the newest good checkpoint in the workdir (train state and data-iterator state together).
3. The jitted step: explicit in/out shardings, state donated, traced once.
4. Loop: the host syncs only at log, checkpoint and eval steps; a non-finite loss stops the run
   before anything is saved, so the last checkpoint on disk is a good one.
5. Retrieval evaluation every `eval.every_steps` and at the end, with the configured baselines.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from rejepa_jax import checkpoint, config_lib, optim, sharding
from rejepa_jax import state as state_lib
from rejepa_jax.data import pipeline
from rejepa_jax.evaluation.retrieval_eval import RetrievalEvaluator, format_table
from rejepa_jax.masking import MultiBlockMaskSampler
from rejepa_jax.metric_writer import MetricWriter
from rejepa_jax.models import factory
from rejepa_jax.progress import TrainProgress
from rejepa_jax.train_step import make_train_step

RESULTS_FILE = "retrieval.json"


class NonFiniteLossError(FloatingPointError):
    """A logged training value became NaN or infinite."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, dict[str, float]]:
    """Trains (or resumes) in `workdir`, then evaluates retrieval; returns metrics per descriptor."""
    config_lib.validate(config)
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    total_steps = config.total_steps
    if config.batch_size % jax.process_count():
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by {jax.process_count()} processes."
        )

    # ---- Mesh, models, masks, optimizer, data ----
    mesh = sharding.make_mesh(config.mesh)
    encoder, predictor = factory.build_encoder(config), factory.build_predictor(config)
    sampler = MultiBlockMaskSampler.from_config(config.masks, factory.patch_grid(config))
    optimizer = optim.make_optimizer(config.optimizer, total_steps)
    train_iter = pipeline.make_train_iterator(
        config, sampler, process_index=jax.process_index(), process_count=jax.process_count()
    )
    logging.info("Masks per image: %s on a %s patch grid.", sampler.shapes, sampler.grid)

    # ---- Shapes, shardings, then the state: restored or initialised already sharded ----
    batch = state_lib.batch_shapes(
        config.batch_size, config.data.image_size, config.data.channels, sampler.shapes
    )
    init_fn = functools.partial(
        state_lib.init_train_state, encoder=encoder, predictor=predictor, optimizer=optimizer, batch=batch
    )
    rng = jax.random.key(config.seed)
    abstract_state = jax.eval_shape(init_fn, rng)
    state_sharding = sharding.state_shardings(abstract_state, mesh)
    fingerprint = checkpoint.compatibility_fingerprint(config, abstract_state)
    checkpointer = checkpoint.Checkpointer(
        workdir / "checkpoints",
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )
    abstract_with_sharding = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
        abstract_state,
        state_sharding,
    )
    restored = checkpointer.restore_latest(abstract_with_sharding, train_iter, fingerprint)
    if restored is None:
        start_step, state = 0, jax.jit(init_fn, out_shardings=state_sharding)(rng)
    else:
        start_step, state = restored
        logging.info("Resumed from step %d in %s.", start_step, checkpointer.directory)

    # ---- The step ----
    replicated = sharding.replicated(mesh)
    batch_sharding = {k: sharding.batch_sharding(mesh) for k in batch}
    step_fn = jax.jit(
        make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )

    writer = MetricWriter(workdir, enabled=is_main)
    writer.write_config(config)
    evaluator = RetrievalEvaluator(config, encoder, mesh)
    progress = TrainProgress(total_steps, start_step, enabled=is_main)
    skipped_records = 0
    last_log_time, last_log_step = time.perf_counter(), start_step
    results: dict[str, dict[str, float]] = {}

    # ---- Loop ----
    try:
        for step in range(start_step + 1, total_steps + 1):
            host_batch = next(train_iter)
            skipped_records += int(host_batch.pop("skipped").sum())
            state, metrics = step_fn(state, sharding.global_batch(host_batch, mesh))

            is_last = step == total_steps
            log_now = step % config.log_every_steps == 0 or is_last
            save_now = step % config.checkpoint.every_steps == 0 or is_last
            if log_now or save_now:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(values, step, checkpointer)
                if log_now:
                    now = time.perf_counter()
                    images_per_second = (
                        (step - last_log_step) * config.batch_size / max(now - last_log_time, 1e-9)
                    )
                    last_log_time, last_log_step = now, step
                    scalars = {f"train/{k}": v for k, v in values.items()}
                    scalars["train/images_per_second"] = images_per_second
                    scalars["data/skipped_records"] = float(skipped_records)
                    writer.write_scalars(step, scalars)
                    progress.update(step, values, images_per_second)
            if save_now:
                checkpointer.save(step, state, train_iter, fingerprint, force=True)
            if (config.eval.every_steps and step % config.eval.every_steps == 0) or is_last:
                results = _evaluate(config, evaluator, state, encoder, writer, step)
        if start_step >= total_steps:  # Already trained: evaluate what is there.
            results = _evaluate(config, evaluator, state, encoder, writer, start_step)
    finally:
        progress.close()
        checkpointer.close()
        writer.close()

    if skipped_records:
        logging.warning("Skipped %d unreadable records (data.skip_bad=True).", skipped_records)
    if is_main:
        (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True))
    return results


def _check_finite(values: dict[str, float], step: int, checkpointer: checkpoint.Checkpointer) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if not bad:
        return
    checkpointer.wait_until_finished()  # Let the last good checkpoint finish writing.
    last_good = checkpointer.latest_step()
    raise NonFiniteLossError(
        f"Non-finite training values at step {step}: {bad}. Stopping; the last good checkpoint is "
        f"{'step ' + str(last_good) if last_good is not None else 'none'} in {checkpointer.directory}. "
        "Lower optimizer.lr or enable optimizer.grad_clip_norm."
    )


def _evaluate(
    config: ml_collections.ConfigDict,
    evaluator: RetrievalEvaluator,
    state: state_lib.TrainState,
    encoder: Any,
    writer: MetricWriter,
    step: int,
) -> dict[str, dict[str, float]]:
    encoders = {name: state_lib.encoder_params(state, name) for name in config.eval.encoders}
    results = {f"rejepa_{name}": report for name, report in evaluator.evaluate(encoders).items()}
    if config.eval.baselines:
        image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
        random_params = state_lib.init_encoder_params(jax.random.key(config.seed), encoder, image_shape)
        results.update(evaluator.baselines(random_params))
    writer.write_scalars(
        step, {f"eval/{name}/{k}": v for name, report in results.items() for k, v in report.items()}
    )
    if jax.process_index() == 0:
        print(f"\nRetrieval at step {step} (queries: {config.data.query_split or 'query'}):")
        print(format_table(results, list(config.eval.ks)), flush=True)
    return results
