"""The train state: one pytree holding everything a checkpoint must restore."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rejepa_jax.masking import MaskShapes


@flax.struct.dataclass
class TrainState:
    """step, online params {encoder, predictor}, EMA target encoder params, optimizer state.

    The target params are a separate subtree, never seen by the optimizer, so they get no gradient
    and no optimizer update; they change only by the EMA after each optimizer step.
    """

    step: jax.Array
    params: dict[str, Any]
    target_params: Any
    opt_state: optax.OptState


def batch_shapes(
    batch_size: int, image_size: int, channels: int, masks: MaskShapes
) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one global train batch: what the step is traced for, once."""
    return {
        "image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, channels), jnp.float32),
        "context_idx": jax.ShapeDtypeStruct((batch_size, masks.num_context_tokens), jnp.int32),
        "target_idx": jax.ShapeDtypeStruct(
            (batch_size, masks.num_targets, masks.num_target_tokens), jnp.int32
        ),
    }


def init_train_state(
    rng: jax.Array,
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    optimizer: optax.GradientTransformation,
    batch: dict[str, jax.ShapeDtypeStruct],
) -> TrainState:
    """Initialises params (trunc-normal 0.02), the target as an exact copy of the encoder, and AdamW."""
    encoder_rng, predictor_rng = jax.random.split(rng)
    one = {k: jnp.zeros((1, *v.shape[1:]), v.dtype) for k, v in batch.items()}
    encoder_params = encoder.init(encoder_rng, one["image"])["params"]
    context = encoder.apply({"params": encoder_params}, one["image"], one["context_idx"])
    predictor_params = predictor.init(predictor_rng, context, one["context_idx"], one["target_idx"])["params"]
    params = {"encoder": encoder_params, "predictor": predictor_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        target_params=jax.tree.map(jnp.copy, encoder_params),
        opt_state=optimizer.init(params),
    )


def init_encoder_params(rng: jax.Array, *, encoder: nn.Module, image_shape: tuple[int, ...]) -> Any:
    """The encoder params `init_train_state` starts from with the same rng (the random-init baseline)."""
    encoder_rng, _ = jax.random.split(rng)
    return encoder.init(encoder_rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]


def encoder_params(state: TrainState, which: str) -> Any:
    """The params of the 'target' (EMA) or 'context' (online) encoder."""
    if which == "target":
        return state.target_params
    if which == "context":
        return state.params["encoder"]
    raise ValueError(f"Unknown encoder {which!r}; expected 'target' or 'context'.")


def select_encoder(params: dict[str, Any], which: str) -> Any:
    """The 'target' or 'context' encoder's params from a restored {encoder, predictor, target} dict.

    The context encoder is stored under "encoder" (the name the optimizer and sharding rules see).
    """
    if which == "target":
        return params["target"]
    if which == "context":
        return params["encoder"]
    raise ValueError(f"Unknown encoder {which!r}; expected 'target' or 'context'.")
