"""AdamW with I-JEPA's schedules: warmup + cosine learning rate, cosine weight decay, EMA momentum.

Every schedule is a function of the step count, evaluated inside the compiled train step, so
resuming from a checkpoint needs no host-side schedule state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from `start_lr` to `lr`, then cosine decay to `final_lr` at `total_steps`."""
    warmup = max(min(opt.warmup_steps, total_steps), 0)
    decay_steps = max(total_steps - warmup, 1)

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warm = opt.start_lr + (opt.lr - opt.start_lr) * step / max(warmup, 1)
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = opt.final_lr + (opt.lr - opt.final_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, warm, cosine)

    return schedule


def weight_decay_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Cosine-shaped rise from `weight_decay` to `final_weight_decay` (the reference code's shape)."""

    def schedule(step: jax.Array) -> jax.Array:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
        start, final = opt.weight_decay, opt.final_weight_decay
        return final + (start - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return schedule


def ema_momentum_schedule(ema: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """EMA momentum rising linearly per step from `start` to `end` over the run."""

    def schedule(step: jax.Array) -> jax.Array:
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
        return ema.start + (ema.end - ema.start) * progress

    return schedule


def ema_initial_weight(ema: ml_collections.ConfigDict, total_steps: int, steps_done: int) -> float:
    """Weight the EMA target still gives its initial params after `steps_done` updates.

    The target starts as a copy of the encoder's initial params and every update multiplies their
    share by the momentum, so after n updates it is the product of the first n momenta. A short run
    with a slow EMA keeps a large share of random init in its target, which this makes visible.
    """
    steps = np.arange(max(steps_done, 0), dtype=np.float64)
    progress = np.clip(steps / max(total_steps, 1), 0.0, 1.0)
    momenta = ema.start + (ema.end - ema.start) * progress
    return float(np.exp(np.sum(np.log(momenta)))) if steps.size else 1.0


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only: biases, norm scales and other 1-D params are excluded."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """AdamW (torch-style decoupled decay: p -= lr * (adam + wd * p)), optional global-norm clip."""
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=learning_rate_schedule(opt, total_steps),
        weight_decay=weight_decay_schedule(opt, total_steps),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        mask=decay_mask,
    )
    if opt.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adamw)
    return adamw
