"""The REJEPA objective: latent regression of target tokens plus VICReg terms against collapse.

    loss = L_pred + variance_weight * v(Z) + covariance_weight * c(Z)

L_pred regresses the predictor's outputs onto the EMA target encoder's tokens after a
parameter-free LayerNorm (I-JEPA). Z is the batch of mean-pooled context-encoder outputs [B, D];
under `jax.jit` over a mesh its batch statistics are those of the global batch (XLA inserts the
cross-device reductions). With `vicreg_on_predictor`, the pooled predictor outputs are a second
view and each term is the mean over the two views (METHOD.md §1.5).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from rejepa_jax.models.vit import gather_tokens, patchify

# The reference normalises targets with torch's F.layer_norm default epsilon.
TARGET_NORM_EPS = 1e-5
PREDICTION_LOSSES = ("smooth_l1", "l2")


def normalize_targets(tokens: jax.Array) -> jax.Array:
    """Parameter-free LayerNorm over the feature axis."""
    mean = tokens.mean(-1, keepdims=True)
    var = jnp.square(tokens - mean).mean(-1, keepdims=True)
    return (tokens - mean) * jax.lax.rsqrt(var + TARGET_NORM_EPS)


def prediction_loss(predictions: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
    """Mean latent-regression loss over target tokens.

    smooth_l1: Huber with delta 1 averaged over elements (the reference code).
    l2: squared L2 distance per token averaged over tokens and blocks (the paper sums over each
    block's patches; the mean keeps the scale independent of the block size).
    """
    if kind == "smooth_l1":
        return optax.huber_loss(predictions, targets, delta=1.0).mean()
    if kind == "l2":
        return jnp.square(predictions - targets).sum(-1).mean()
    raise ValueError(f"objective.loss must be one of {PREDICTION_LOSSES}, got {kind!r}.")


def vicreg_variance(z: jax.Array, gamma: float, eps: float) -> jax.Array:
    """Mean over dimensions of max(0, gamma - sqrt(Var_j + eps)), unbiased variance over the batch."""
    std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
    return jnp.mean(jax.nn.relu(gamma - std))


def vicreg_covariance(z: jax.Array) -> jax.Array:
    """Sum of squared off-diagonal covariances divided by the dimension."""
    n, d = z.shape
    centred = z - z.mean(axis=0)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - jnp.diag(jnp.diag(cov))
    return jnp.sum(jnp.square(off_diagonal)) / d


def jepa_loss(
    params: dict[str, Any],
    target_params: Any,
    batch: dict[str, jax.Array],
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    objective: ml_collections.ConfigDict,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one batch and its logged terms; differentiable in `params` only."""
    images, context_idx, target_idx = batch["image"], batch["context_idx"], batch["target_idx"]

    # Target path: full image through the EMA encoder, no gradient.
    target_tokens = encoder.apply({"params": jax.lax.stop_gradient(target_params)}, images)
    target_tokens = jax.lax.stop_gradient(normalize_targets(target_tokens.astype(jnp.float32)))
    targets = gather_tokens(target_tokens, target_idx)  # [B, M, Kt, D]

    # Context path: only the context tokens, then the predictor at the target positions.
    context = encoder.apply({"params": params["encoder"]}, images, context_idx)  # [B, Kc, D]
    predictions = predictor.apply({"params": params["predictor"]}, context, context_idx, target_idx)
    pred_loss = prediction_loss(predictions.astype(jnp.float32), targets, objective.loss)

    pooled = context.astype(jnp.float32).mean(axis=1)
    views = [pooled]
    if objective.vicreg_on_predictor:
        views.append(predictions.astype(jnp.float32).mean(axis=(1, 2)))
    variance = sum(vicreg_variance(z, objective.variance_gamma, objective.variance_eps) for z in views)
    covariance = sum(vicreg_covariance(z) for z in views)
    variance, covariance = variance / len(views), covariance / len(views)

    loss = pred_loss
    if objective.vicreg:
        loss = loss + objective.variance_weight * variance + objective.covariance_weight * covariance
    terms = {
        "loss": loss,
        "pred_loss": pred_loss,
        "vicreg_variance": variance,
        "vicreg_covariance": covariance,
        "context_std": jnp.std(pooled, axis=0).mean(),
        "target_std": jnp.std(target_tokens.mean(axis=1), axis=0).mean(),
    }
    return loss, terms


def mae_loss(
    params: dict[str, Any],
    target_params: Any,
    batch: dict[str, jax.Array],
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    objective: ml_collections.ConfigDict,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The MAE baseline: reconstruct the pixels of the masked patches from the visible ones.

    Mean squared error over the masked patches, on per-patch normalised pixels with
    `norm_pix_loss` (the MAE paper's better setting). No EMA target and no VICReg: `target_params`
    is unused and kept only so both objectives share the train step.
    """
    del target_params
    images, context_idx, target_idx = batch["image"], batch["context_idx"], batch["target_idx"]
    patch_size = encoder.patch_size
    targets = gather_tokens(patchify(images.astype(jnp.float32), patch_size), target_idx)  # [B, 1, Kt, P]
    if objective.norm_pix_loss:
        mean = targets.mean(-1, keepdims=True)
        var = targets.var(-1, keepdims=True)
        targets = (targets - mean) * jax.lax.rsqrt(var + 1e-6)
    context = encoder.apply({"params": params["encoder"]}, images, context_idx)
    predictions = predictor.apply({"params": params["predictor"]}, context, context_idx, target_idx)
    loss = jnp.square(predictions.astype(jnp.float32) - targets).mean()
    pooled = context.astype(jnp.float32).mean(axis=1)
    terms = {"loss": loss, "pred_loss": loss, "context_std": jnp.std(pooled, axis=0).mean()}
    return loss, terms


OBJECTIVES = {"rejepa": jepa_loss, "mae": mae_loss}
