"""The REJEPA objective: latent regression of target tokens plus VICReg against collapse.

    loss = prediction_weight * L_pred
           + invariance_weight * s(Z) + variance_weight * v(Z) + covariance_weight * c(Z)

L_pred regresses the predictor's outputs onto the EMA target encoder's tokens after a
parameter-free LayerNorm (I-JEPA), averaged over the global views of an image (each with its own
masks), or over the first `predicted_views` of them (the target encoder and predictor are most of
a step's cost). Z holds one embedding per view of each image: the mean-pooled context-encoder output of
every global view, then of every local view, passed through VICReg's expander when the config has
one. v and c are VICReg's variance and covariance terms, averaged over the views; s is VICReg's
invariance, the mean squared difference between an image's views, averaged over the pairs
(global view g, any other view). With one view and no expander this is exactly the original REJEPA
loss (s = 0). Under `jax.jit` over a mesh the batch statistics are those of the global batch (XLA
inserts the cross-device reductions). With `vicreg_on_predictor`, the pooled predictor outputs of
each global view are extra views for v and c only.
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
# Path, in the train state's params, of the bias of the context encoder's final LayerNorm.
ENCODER_FINAL_NORM_BIAS = ("context_encoder", "blocks", "norm", "bias")


def params_without_signal(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], ...]:
    """Param paths the objective cannot see: their gradient is float rounding alone.

    Without the latent prediction, every term of the REJEPA loss (VICReg's variance, covariance and
    invariance, with or without the expander) is unchanged when one constant vector is added to
    every pooled embedding, which is all the bias of the encoder's final LayerNorm does. Adam divides
    rounding noise by its own size and would turn it into a random walk of the descriptor's offset
    (it moves raw descriptors, and differently on every mesh), so the train step keeps these params
    at their initial values.
    """
    if config.method == "rejepa" and not config.objective.prediction_weight:
        return (ENCODER_FINAL_NORM_BIAS,)
    return ()


def normalise_targets(tokens: jax.Array) -> jax.Array:
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


def vicreg_invariance(z: jax.Array, num_global: int) -> jax.Array:
    """Mean over pairs (g < num_global, v != g) of the mean squared difference of z[:, g] and z[:, v].

    z is [B, V, D] with the global views first. With two views this is VICReg's MSE(Z, Z'); with
    local views too it is the multi-crop pairing (every view against every global view).
    """
    num_views = z.shape[1]
    if num_views < 2:
        return jnp.zeros((), z.dtype)
    # The v = g pair contributes 0, so summing over every v and dividing by V - 1 pairs is exact.
    diffs = z[:, :num_global, None, :] - z[:, None, :, :]  # [B, G, V, D]
    return jnp.square(diffs).mean(axis=(0, 3)).sum() / (num_global * (num_views - 1))


def _with_view_axis(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(images [B, G, H, W, C], context_idx [B, G, Kc], target_idx [B, G, M, Kt]) of any batch.

    A single-view batch (data.global_views = 1) has no view axis; it gets one of size 1.
    """
    images, context_idx, target_idx = batch["image"], batch["context_idx"], batch["target_idx"]
    if images.ndim == 4:
        return images[:, None], context_idx[:, None], target_idx[:, None]
    return images, context_idx, target_idx


def _fold(x: jax.Array) -> jax.Array:
    """[B, V, ...] -> [B * V, ...], batch-major, so a batch sharding stays a batch sharding."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def jepa_loss(
    params: dict[str, Any],
    target_encoder_params: Any,
    batch: dict[str, jax.Array],
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    objective: ml_collections.ConfigDict,
    expander: nn.Module | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one batch and its logged terms; differentiable in `params` only."""
    images, context_idx, target_idx = _with_view_axis(batch)
    batch_size, num_global = images.shape[:2]
    terms: dict[str, jax.Array] = {}

    # Context path: only the context tokens of every global view.
    context = encoder.apply({"params": params["context_encoder"]}, _fold(images), _fold(context_idx))
    pooled_views = [context.astype(jnp.float32).mean(axis=1).reshape(batch_size, num_global, -1)]

    loss = jnp.zeros((), jnp.float32)
    num_predicted = objective.predicted_views or num_global
    if not 1 <= num_predicted <= num_global:
        raise ValueError(f"objective.predicted_views={num_predicted} must be in 0..{num_global} (0: all).")
    if objective.prediction_weight:
        # Target path: each predicted full view through the EMA encoder, no gradient.
        images, context_idx, target_idx = (x[:, :num_predicted] for x in (images, context_idx, target_idx))
        predicted_context = context.reshape(batch_size, num_global, *context.shape[1:])[:, :num_predicted]
        target_tokens = encoder.apply({"params": jax.lax.stop_gradient(target_encoder_params)}, _fold(images))
        target_tokens = jax.lax.stop_gradient(normalise_targets(target_tokens.astype(jnp.float32)))
        targets = gather_tokens(target_tokens, _fold(target_idx))  # [B*P, M, Kt, D]
        predictions = predictor.apply(
            {"params": params["predictor"]}, _fold(predicted_context), _fold(context_idx), _fold(target_idx)
        )
        pred_loss = prediction_loss(predictions.astype(jnp.float32), targets, objective.loss)
        loss = loss + objective.prediction_weight * pred_loss
        terms["pred_loss"] = pred_loss
        terms["target_std"] = jnp.std(target_tokens.mean(axis=1), axis=0).mean()

    if "local_image" in batch:  # Small unmasked views: the context encoder sees all their tokens.
        local = batch["local_image"]
        local_tokens = encoder.apply({"params": params["context_encoder"]}, _fold(local))
        pooled_views.append(local_tokens.astype(jnp.float32).mean(axis=1).reshape(*local.shape[:2], -1))
    pooled = jnp.concatenate(pooled_views, axis=1)  # [B, V, D], global views first
    z = pooled if expander is None else expander.apply({"params": params["expander"]}, pooled)

    regularised = [z[:, v] for v in range(z.shape[1])]
    if objective.vicreg_on_predictor and objective.prediction_weight:
        pooled_predictions = predictions.astype(jnp.float32).mean(axis=(1, 2))
        pooled_predictions = pooled_predictions.reshape(batch_size, num_predicted, -1)
        if expander is not None:
            pooled_predictions = expander.apply({"params": params["expander"]}, pooled_predictions)
        regularised += [pooled_predictions[:, g] for g in range(num_predicted)]
    gamma, eps = objective.variance_gamma, objective.variance_eps
    variance = sum(vicreg_variance(view, gamma, eps) for view in regularised) / len(regularised)
    covariance = sum(vicreg_covariance(view) for view in regularised) / len(regularised)
    invariance = vicreg_invariance(z, num_global)

    if objective.vicreg:
        loss = loss + objective.variance_weight * variance + objective.covariance_weight * covariance
        loss = loss + objective.invariance_weight * invariance
    terms.update(
        loss=loss,
        vicreg_variance=variance,
        vicreg_covariance=covariance,
        vicreg_invariance=invariance,
        context_std=jnp.std(pooled[:, 0], axis=0).mean(),
    )
    return loss, terms


def mae_loss(
    params: dict[str, Any],
    target_encoder_params: Any,
    batch: dict[str, jax.Array],
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    objective: ml_collections.ConfigDict,
    expander: nn.Module | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The MAE baseline: reconstruct the pixels of the masked patches from the visible ones.

    Mean squared error over the masked patches, on per-patch normalised pixels with
    `norm_pix_loss` (the MAE paper's better setting). No EMA target and no VICReg: `target_encoder_params`
    is unused and kept only so both objectives share the train step.
    """
    del target_encoder_params, expander
    images, context_idx, target_idx = batch["image"], batch["context_idx"], batch["target_idx"]
    patch_size = encoder.patch_size
    targets = gather_tokens(patchify(images.astype(jnp.float32), patch_size), target_idx)  # [B, 1, Kt, P]
    if objective.norm_pix_loss:
        mean = targets.mean(-1, keepdims=True)
        var = targets.var(-1, keepdims=True)
        targets = (targets - mean) * jax.lax.rsqrt(var + 1e-6)
    context = encoder.apply({"params": params["context_encoder"]}, images, context_idx)
    predictions = predictor.apply({"params": params["predictor"]}, context, context_idx, target_idx)
    loss = jnp.square(predictions.astype(jnp.float32) - targets).mean()
    pooled = context.astype(jnp.float32).mean(axis=1)
    terms = {"loss": loss, "pred_loss": loss, "context_std": jnp.std(pooled, axis=0).mean()}
    return loss, terms


OBJECTIVES = {"rejepa": jepa_loss, "mae": mae_loss}
