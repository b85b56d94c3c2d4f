"""Builds the encoder and predictor modules a config describes."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from rejepa_jax.models.expander import Expander
from rejepa_jax.models.vit import Predictor, VisionTransformer, VitShape, check_init_scheme, parse_variant

METHODS = ("rejepa", "mae")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def encoder_shape(model_config: ml_collections.ConfigDict) -> VitShape:
    """Width, depth, heads and patch size of the configured encoder."""
    return parse_variant(
        model_config.variant,
        width=model_config.width,
        depth=model_config.depth,
        num_heads=model_config.num_heads,
    )


def compute_dtype(model_config: ml_collections.ConfigDict) -> jnp.dtype:
    if model_config.dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {model_config.dtype!r}.")
    return _DTYPES[model_config.dtype]


def patch_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """The patch grid (rows, cols) of a square `data.image_size` image."""
    patch = encoder_shape(config.model).patch_size
    if config.data.image_size % patch:
        raise ValueError(
            f"data.image_size={config.data.image_size} is not divisible by the patch size {patch} "
            f"of model.variant={config.model.variant!r}."
        )
    side = config.data.image_size // patch
    return side, side


def build_encoder(config: ml_collections.ConfigDict) -> VisionTransformer:
    shape = encoder_shape(config.model)
    return VisionTransformer(
        patch_size=shape.patch_size,
        width=shape.width,
        depth=shape.depth,
        num_heads=shape.num_heads,
        mlp_ratio=config.model.mlp_ratio,
        dtype=compute_dtype(config.model),
        remat=config.model.remat,
        init_scheme=check_init_scheme(config.model.init),
    )


def build_predictor(config: ml_collections.ConfigDict) -> Predictor:
    """REJEPA's narrow predictor, or the MAE baseline's pixel decoder (`method="mae"`)."""
    shape = encoder_shape(config.model)
    heads = config.model.predictor_heads or shape.num_heads
    if config.model.predictor_width % heads or config.model.predictor_width % 4:
        raise ValueError(
            f"model.predictor_width={config.model.predictor_width} must be divisible by 4 and by the "
            f"predictor's {heads} heads (model.predictor_heads)."
        )
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config.method!r}.")
    # REJEPA predicts encoder tokens; the MAE baseline's decoder predicts the pixels of a patch.
    pixels = shape.patch_size**2 * config.data.channels
    return Predictor(
        grid=patch_grid(config),
        out_features=shape.width if config.method == "rejepa" else pixels,
        width=config.model.predictor_width,
        depth=config.model.predictor_depth,
        num_heads=heads,
        mlp_ratio=config.model.mlp_ratio,
        dtype=compute_dtype(config.model),
        remat=config.model.remat,
        joint_targets=config.model.predictor_joint_targets,
        init_scheme=check_init_scheme(config.model.init),
    )


def build_expander(config: ml_collections.ConfigDict) -> Expander | None:
    """VICReg's expander, or None when `model.expander_widths` is empty (terms on the raw embedding)."""
    widths = tuple(config.model.expander_widths)
    if not widths:
        return None
    if config.method != "rejepa":
        raise ValueError(
            f"model.expander_widths is a REJEPA setting; method={config.method!r} has no VICReg."
        )
    if any(w < 1 for w in widths):
        raise ValueError(f"model.expander_widths must be positive, got {widths}.")
    return Expander(widths)
