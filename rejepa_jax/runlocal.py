"""The `runlocal` variant every config offers: a few steps of a tiny model, in seconds on a CPU.

Tests and a first try on a laptop run each config this way; keeping the shrinking in one place means
every config's runlocal exercises the same path (log, checkpoint, evaluate) with the same small model.
"""

from __future__ import annotations

import ml_collections


def shrink(
    config: ml_collections.ConfigDict,
    *,
    steps: int,
    batch_size: int,
    eval_batch_size: int,
    checkpoint_every_steps: int,
    log_every_steps: int = 2,
    warmup_steps: int = 2,
    eval_every_steps: int | None = 0,
    baselines: tuple[str, ...] | None = (),
) -> None:
    """Every config's `runlocal`: a few steps of a tiny model that still logs, checkpoints and evaluates.

    The model keeps the recipe's structure (views, joint predictor, expander depth) with 2 encoder
    blocks, a one-block narrow predictor and a small expander, so a test run exercises the recipe.
    Data are read in the main process. Evaluation during training is off and the baselines are
    dropped unless `eval_every_steps` / `baselines` say otherwise (None keeps the config's).
    """
    config.total_steps = steps
    config.batch_size = batch_size
    config.log_every_steps = log_every_steps
    config.model.depth = 2
    config.model.predictor_width = 96
    config.model.predictor_depth = 1
    config.model.expander_widths = tuple(min(w, 64) for w in config.model.expander_widths)
    config.data.num_workers = 0
    config.optimizer.warmup_steps = warmup_steps
    config.checkpoint.every_steps = checkpoint_every_steps
    config.eval.batch_size = eval_batch_size
    if eval_every_steps is not None:
        config.eval.every_steps = eval_every_steps
    if baselines is not None:
        config.eval.baselines = baselines


def shrink_to_synthetic(
    config: ml_collections.ConfigDict, *, variant: str, steps: int, batch_size: int
) -> None:
    """The `runlocal` variant of an accelerator config: synthetic data, a one-block model, few steps.

    It keeps the config's image size and band count, so a test run still exercises its data shapes.
    """
    config.model.variant = variant
    shrink(
        config,
        steps=steps,
        batch_size=batch_size,
        eval_batch_size=2 * batch_size,
        checkpoint_every_steps=steps,
        log_every_steps=1,
        warmup_steps=1,
    )
    config.data.source = "synthetic"
    config.data.synthetic_size = 8 * batch_size
    config.data.num_threads = 2
    config.model.depth = 1
    config.model.dtype = "float32"
    config.model.remat = False
    config.eval.ks = (5, 10)
