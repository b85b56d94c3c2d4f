"""The train state: one pytree holding everything a checkpoint must restore."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rejepa_jax.masking import MaskShapes


@flax.struct.dataclass
class TrainState:
    """step, online params {context_encoder, predictor[, expander]}, the EMA target encoder, optimizer state.

    The target encoder's params are a separate subtree, never seen by the optimizer, so they get no gradient
    and no optimizer update; they change only by the EMA after each optimizer step.
    """

    step: jax.Array
    params: dict[str, Any]
    target_encoder: Any
    opt_state: optax.OptState

    @property
    def target_params(self) -> Any:
        """The target encoder's params under the name external tools read (the I-JEPA side-by-side
        harness); the project itself says `target_encoder`."""
        return self.target_encoder


def batch_shapes(
    batch_size: int,
    image_size: int,
    channels: int,
    masks: MaskShapes,
    *,
    global_views: int = 1,
    local_views: int = 0,
    local_size: int = 0,
) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one global train batch: what the step is traced for, once.

    With one global view: image [B, S, S, C], context_idx [B, Kc], target_idx [B, M, Kt]. With G > 1
    views each gets a view axis after the batch axis. Local views add local_image [B, L, s, s, C].
    """
    views = (global_views,) if global_views > 1 else ()
    shapes = {
        "image": jax.ShapeDtypeStruct((batch_size, *views, image_size, image_size, channels), jnp.float32),
        "context_idx": jax.ShapeDtypeStruct((batch_size, *views, masks.num_context_tokens), jnp.int32),
        "target_idx": jax.ShapeDtypeStruct(
            (batch_size, *views, masks.num_targets, masks.num_target_tokens), jnp.int32
        ),
    }
    if local_views:
        shapes["local_image"] = jax.ShapeDtypeStruct(
            (batch_size, local_views, local_size, local_size, channels), jnp.float32
        )
    return shapes


def init_train_state(
    rng: jax.Array,
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    optimizer: optax.GradientTransformation,
    batch: dict[str, jax.ShapeDtypeStruct],
    expander: nn.Module | None = None,
) -> TrainState:
    """Initialises params (trunc-normal 0.02), the target as an exact copy of the encoder, and AdamW.

    The expander (when there is one) draws its params from a third key, so adding it leaves the
    encoder's and predictor's initial values unchanged.
    """
    encoder_rng, predictor_rng = jax.random.split(rng)
    # One example of one view: params do not depend on the batch or the number of views.
    skip = 2 if len(batch["image"].shape) == 5 else 1
    one = {
        k: jnp.zeros((1, *batch[k].shape[skip:]), batch[k].dtype)
        for k in ("image", "context_idx", "target_idx")
    }
    encoder_params = encoder.init(encoder_rng, one["image"])["params"]
    context = encoder.apply({"params": encoder_params}, one["image"], one["context_idx"])
    predictor_params = predictor.init(predictor_rng, context, one["context_idx"], one["target_idx"])["params"]
    params = {"context_encoder": encoder_params, "predictor": predictor_params}
    if expander is not None:
        pooled = jnp.zeros((2, context.shape[-1]), jnp.float32)
        params["expander"] = expander.init(jax.random.fold_in(rng, 2), pooled)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        target_encoder=jax.tree.map(jnp.copy, encoder_params),
        opt_state=optimizer.init(params),
    )


def init_encoder_params(rng: jax.Array, *, encoder: nn.Module, image_shape: tuple[int, ...]) -> Any:
    """The encoder params `init_train_state` starts from with the same rng (the random-init baseline)."""
    encoder_rng, _ = jax.random.split(rng)
    return encoder.init(encoder_rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]


def encoder_params(state: TrainState, which: str) -> Any:
    """The params of the 'target' (EMA) or 'context' (online) encoder; the one way to pick either.

    The context encoder lives in `params` (the optimizer's subtree), the target beside it.
    """
    if which == "target":
        return state.target_encoder
    if which == "context":
        return state.params["context_encoder"]
    raise ValueError(f"Unknown encoder {which!r}; expected 'target' or 'context'.")


def descriptor_encoder(config: ml_collections.ConfigDict, requested: str | None = None) -> str:
    """The encoder whose descriptors a run exports: `requested`, else the first of `eval.encoders`.

    Recipes list their validated descriptor first, so export and evaluation default to it.
    """
    return requested or config.eval.encoders[0]
