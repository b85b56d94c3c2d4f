"""The REJEPA training loop, in the order it runs.

1. Mesh, models, mask sampler, optimizer, data iterator.
2. Abstract state (jax.eval_shape) -> shardings -> state initialised already sharded, or restored
   from the newest good checkpoint in the workdir (train state and data-iterator state together).
3. The jitted step: explicit in/out shardings, state donated, traced once.
4. Loop: the host syncs only at log, checkpoint and eval steps (and once after the last step of a
   `profile.steps` trace); a non-finite loss stops the run before anything is saved, so the last
   checkpoint on disk is a good one.
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

from rejepa_jax import checkpoint, optim, profiling, sharding
from rejepa_jax import state as state_lib
from rejepa_jax.data import pipeline
from rejepa_jax.evaluation.collapse import CollapseAlarm
from rejepa_jax.evaluation.retrieval_eval import RetrievalEvaluator, format_table
from rejepa_jax.metric_writer import TENSORBOARD_DIR, MetricWriter
from rejepa_jax.preemption import PreemptionWatcher
from rejepa_jax.progress import Throughput, TrainProgress
from rejepa_jax.run_setup import RunSetup, build_run
from rejepa_jax.train_step import make_train_step

RESULTS_FILE = "retrieval.json"
# Training values shown on the console line (all of them go to metrics.jsonl and TensorBoard).
CONSOLE_KEYS = ("loss", "pred_loss", "vicreg_invariance", "vicreg_variance", "vicreg_covariance", "lr")


class NonFiniteLossError(FloatingPointError):
    """A logged training value became NaN or infinite."""


class RetraceError(RuntimeError):
    """The train step was traced a second time: some input changed shape or dtype."""


def _trace_once(step_fn: Any) -> Any:
    """Wraps the step so that a second trace (a silent recompile) fails loudly at trace time."""
    traces = 0

    def step(state: Any, batch: dict[str, Any]) -> Any:
        nonlocal traces
        traces += 1
        if traces > 1:
            shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
            raise RetraceError(f"The train step was traced again (batch {shapes}); shapes must stay static.")
        return step_fn(state, batch)

    return step


def make_checkpointer(
    config: ml_collections.ConfigDict, workdir: str | Path, *, read_only: bool = False
) -> checkpoint.Checkpointer:
    """The workdir's checkpointer; `read_only` for readers, which must not change a live run's folder."""
    if read_only:
        return checkpoint.Checkpointer(Path(workdir) / "checkpoints", read_only=True)
    return checkpoint.Checkpointer(
        Path(workdir) / "checkpoints",
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )


def jit_train_step(config: ml_collections.ConfigDict, run: RunSetup, *, wrap=lambda fn: fn) -> Any:
    """The train step as training compiles it: explicit state and batch shardings, state donated.

    Training, `--dry_run` and the benchmarks all call this, so what they measure is what runs.
    `wrap` decorates the Python step before jit (the trainer's trace-once guard).
    """
    return jax.jit(
        wrap(
            make_train_step(
                config,
                encoder=run.encoder,
                predictor=run.predictor,
                optimizer=run.optimizer,
                expander=run.expander,
            )
        ),
        in_shardings=(run.state_sharding, {k: sharding.batch_sharding(run.mesh) for k in run.batch}),
        out_shardings=(run.state_sharding, sharding.replicated(run.mesh)),
        donate_argnums=0,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, dict[str, float]]:
    """Trains (or resumes) in `workdir`, then evaluates retrieval; returns metrics per descriptor.

    Returns an empty dict when a SIGTERM stopped the run early: during start-up (nothing trained or
    saved, the checkpoints untouched) or in the loop (after saving a checkpoint).
    """
    # First of all, so that a SIGTERM during start-up (restore included) cannot kill the process.
    preemption = PreemptionWatcher(config.checkpoint.preemption_check_every)
    try:
        run = build_run(config)
        with jax.set_mesh(run.mesh):
            return _train_and_evaluate(config, Path(workdir), run, preemption)
    finally:
        preemption.close()


def _stopped_in_start_up(preemption: PreemptionWatcher, checkpoints: Path, next_step: int) -> bool:
    """After a SIGTERM before the loop: says so (process 0) and returns True on every process."""
    if not preemption.stop_requested_now():
        return False
    message = (
        f"Stopped by SIGTERM during start-up, before step {next_step}; nothing was trained or saved and "
        f"the checkpoints in {checkpoints} are unchanged. Run the same command again to resume."
    )
    logging.warning(message)
    if jax.process_index() == 0:
        print(message, flush=True)
    return True


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: Path, run: RunSetup, preemption: PreemptionWatcher
) -> dict[str, dict[str, float]]:
    is_main = jax.process_index() == 0
    total_steps = config.total_steps
    mesh, encoder = run.mesh, run.encoder
    shards = sharding.batch_divisor(mesh)
    if config.batch_size % shards:
        raise ValueError(
            f"batch_size={config.batch_size} must be a multiple of the {shards} batch shards of mesh "
            f"{dict(mesh.shape)} (data x fsdp)."
        )
    collapse_alarm = CollapseAlarm(config.collapse_warning_std)  # Refuses a bad threshold first.
    profiler = profiling.StepProfiler(
        config.profile.steps, total_steps, workdir / TENSORBOARD_DIR, enabled=is_main
    )

    def make_train_iter() -> Any:
        return pipeline.make_train_iterator(
            config, run.sampler, process_index=jax.process_index(), process_count=jax.process_count()
        )

    logging.info("Masks per image: %s on a %s patch grid.", run.sampler.shapes, run.sampler.grid)
    logging.info("Mesh %s over %d devices, %d processes.", dict(mesh.shape), mesh.size, jax.process_count())
    checkpointer = make_checkpointer(config, workdir)
    if _stopped_in_start_up(preemption, checkpointer.directory, (checkpointer.latest_step() or 0) + 1):
        checkpointer.close()
        return {}
    train_iter = make_train_iter()
    writer = None
    progress = None
    try:
        # ---- The state: restored (with the data-iterator state) or initialised already sharded ----
        restored = checkpointer.restore_latest(run.abstract_state, train_iter, run.fingerprint)
        if restored is None:
            set_aside = checkpointer.set_aside_steps()
            if set_aside:
                _check_restart_allowed(config, checkpointer.directory, set_aside)
                # A damaged step may have set the iterator before failing: start it afresh.
                train_iter.close()
                train_iter = make_train_iter()
            start_step = 0
        else:
            start_step, state = restored
            logging.info("Resumed from step %d in %s.", start_step, checkpointer.directory)
        if _stopped_in_start_up(preemption, checkpointer.directory, start_step + 1):
            return {}
        if restored is None:
            state = jax.jit(run.init_fn, out_shardings=run.state_sharding)(jax.random.key(config.seed))

        # ---- The step: explicit shardings, state donated, traced once ----
        step_fn = jit_train_step(config, run, wrap=_trace_once)

        writer = MetricWriter(workdir, enabled=is_main)
        writer.write_config(config)
        evaluator = RetrievalEvaluator(config, encoder, mesh)
        progress = TrainProgress(total_steps, start_step, enabled=is_main)
        throughput = Throughput(config.batch_size)
        throughput.update(start_step)
        skipped_records = 0  # Unreadable records dropped by this process (data.skip_bad=True).
        input_wait, interval_start = 0.0, time.perf_counter()

        # ---- Loop ----
        for step in range(start_step + 1, total_steps + 1):
            with profiler.step(step):  # Starts the trace at the first profiled step.
                wait_start = time.perf_counter()
                host_batch = next(train_iter)
                input_wait += time.perf_counter() - wait_start
                skipped_records += int(host_batch.pop("skipped").sum())
                device_batch = sharding.global_batch(host_batch, mesh)
                with jax.transfer_guard("disallow"):  # No implicit host<->device copies in the step.
                    state, metrics = step_fn(state, device_batch)
            profiler.step_done(step, (state, metrics))  # Syncs only to stop the trace.

            is_last = step == total_steps
            preempted = preemption.should_stop(step) and not is_last
            log_now = step % config.log_every_steps == 0 or is_last or preempted
            save_now = step % config.checkpoint.every_steps == 0 or is_last or preempted
            if log_now or save_now:  # The only host syncs of the loop.
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(values, step, checkpointer)
            if log_now:
                rate = throughput.update(step)
                now = time.perf_counter()
                scalars = {f"train/{k}": v for k, v in values.items()}
                scalars["train/images_per_second"] = rate
                # Share of the wall time spent waiting for input: the pipeline's stall on the step.
                scalars["train/input_wait_fraction"] = input_wait / max(now - interval_start, 1e-9)
                input_wait, interval_start = 0.0, now
                scalars["data/skipped_records"] = float(skipped_records)
                if config.method == "rejepa":  # Share of random init left in the EMA target.
                    scalars["train/ema_initial_weight"] = optim.ema_initial_weight(
                        config.ema, total_steps, step
                    )
                writer.write_scalars(step, scalars)
                collapse_warning = collapse_alarm.check(step, values.get("context_std"))
                if collapse_warning:
                    with progress.cleared():  # absl prints it to stderr: once, above the bar.
                        logging.warning(collapse_warning)
                progress.update(step, {k: values[k] for k in CONSOLE_KEYS if k in values}, rate)
            if save_now:
                checkpointer.save(step, state, train_iter, run.fingerprint, force=True)
            if preempted:
                checkpointer.wait_until_finished()
                progress.close()
                message = (
                    f"Stopped by SIGTERM after step {step}; checkpoint saved in {checkpointer.directory}. "
                    "Run the same command again to resume."
                )
                logging.warning(message)
                if is_main:
                    print(message, flush=True)
                return {}
            if config.eval.every_steps and step % config.eval.every_steps == 0 and not is_last:
                _evaluate(config, evaluator, state, encoder, writer, step)
        progress.close()
        results = _evaluate(config, evaluator, state, encoder, writer, max(start_step, total_steps))
    finally:
        profiler.close()
        if progress is not None:
            progress.close()
        checkpointer.close()
        if writer is not None:
            writer.close()
        train_iter.close()  # Stops grain's worker processes and frees their shared memory.

    if skipped_records:
        logging.warning("Skipped %d unreadable records (data.skip_bad=True).", skipped_records)
    if is_main:
        (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True))
    return results


def _check_restart_allowed(config: ml_collections.ConfigDict, directory: Path, set_aside: list[Path]) -> None:
    """Refuses to train from step 0 over set-aside (damaged) steps unless the config allows it."""
    names = ", ".join(p.name for p in set_aside)
    if not config.checkpoint.restart_despite_unreadable:
        raise checkpoint.NoUsableCheckpointError(
            f"No readable checkpoint is left in {directory}, only damaged steps set aside there "
            f"({names}). Not starting again from step 0, which would silently discard that training. "
            "Inspect or move them away, or pass --config.checkpoint.restart_despite_unreadable=True "
            "to train from step 0 anyway (they are kept)."
        )
    logging.warning(
        "Training from step 0 although damaged steps were set aside in %s (%s): "
        "checkpoint.restart_despite_unreadable=True.",
        directory,
        names,
    )


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
    results = {f"{config.method}_{name}": report for name, report in evaluator.evaluate(encoders).items()}
    if config.eval.baselines:
        image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
        init = functools.partial(state_lib.init_encoder_params, encoder=encoder, image_shape=image_shape)
        random_params = jax.jit(init, out_shardings=sharding.replicated(evaluator.mesh))(
            jax.random.key(config.seed)
        )
        results.update(evaluator.baselines(random_params))
    writer.write_scalars(
        step, {f"eval/{name}/{k}": v for name, report in results.items() for k, v in report.items()}
    )
    if jax.process_index() == 0:
        print(f"\nRetrieval at step {step} (queries: {config.data.query_split or 'query'}):")
        print(format_table(results, list(config.eval.ks)), flush=True)
    return results
