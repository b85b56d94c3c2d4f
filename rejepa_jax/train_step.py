"""One REJEPA update: forward, backward, AdamW step, then the EMA update of the target encoder.

Params the objective cannot see (`objective.params_without_signal`) get a zero gradient, so AdamW
leaves them at their initial values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rejepa_jax import objective, optim
from rejepa_jax.state import TrainState

TrainStepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def ema_update(target: Any, online: Any, momentum: jax.Array) -> Any:
    """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
    return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def zero_gradients(grads: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
    """`grads` with the leaves at `paths` (tuples of dict keys) set to zero; a missing path is an error."""
    if not paths:
        return grads
    found: set[tuple[str, ...]] = set()

    def zero_if_listed(path: tuple[Any, ...], grad: jax.Array) -> jax.Array:
        names = tuple(str(getattr(key, "key", key)) for key in path)
        if names in paths:
            found.add(names)
            return jnp.zeros_like(grad)
        return grad

    grads = jax.tree_util.tree_map_with_path(zero_if_listed, grads)
    if missing := set(paths) - found:
        raise ValueError(f"No parameter at {sorted(missing)} to hold fixed.")
    return grads


def make_train_step(
    config: ml_collections.ConfigDict,
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    optimizer: optax.GradientTransformation,
    expander: nn.Module | None = None,
) -> TrainStepFn:
    """Returns the pure (state, batch) -> (state, metrics) function that the trainer jits."""
    total_steps = config.total_steps
    lr_fn = optim.learning_rate_schedule(config.optimizer, total_steps)
    wd_fn = optim.weight_decay_schedule(config.optimizer, total_steps)
    momentum_fn = optim.ema_momentum_schedule(config.ema, total_steps)

    objective_fn = objective.OBJECTIVES[config.method]
    fixed_params = objective.params_without_signal(config)

    def loss_fn(params, target_encoder_params, batch):
        return objective_fn(
            params,
            target_encoder_params,
            batch,
            encoder=encoder,
            predictor=predictor,
            objective=config.objective,
            expander=expander,
        )

    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_encoder, batch
        )
        grads = zero_gradients(grads, fixed_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        momentum = momentum_fn(state.step)
        target_encoder = ema_update(state.target_encoder, params["context_encoder"], momentum)
        metrics = {
            **terms,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
            "lr": lr_fn(state.step),
            "weight_decay": wd_fn(state.step),
            "ema_momentum": momentum,
        }
        new_state = TrainState(
            step=state.step + 1, params=params, target_encoder=target_encoder, opt_state=opt_state
        )
        return new_state, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

    return train_step
