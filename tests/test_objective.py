"""Objective terms against direct NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rejepa_jax import config_lib, objective, optim
from rejepa_jax import state as state_lib
from rejepa_jax.masking import MultiBlockMaskSampler
from rejepa_jax.models import factory
from rejepa_jax.models.expander import BatchStatNorm


def test_vicreg_variance_matches_numpy():
    z = np.random.default_rng(0).normal(scale=0.5, size=(16, 6)).astype(np.float32)
    std = np.sqrt(z.var(axis=0, ddof=1) + 1e-4)
    expected = np.mean(np.maximum(0.0, 1.0 - std))
    assert float(objective.vicreg_variance(jnp.asarray(z), 1.0, 1e-4)) == pytest.approx(expected, rel=1e-5)


def test_vicreg_variance_is_zero_above_gamma_and_max_for_collapse():
    z = np.random.default_rng(1).normal(scale=5.0, size=(64, 4)).astype(np.float32)
    assert float(objective.vicreg_variance(jnp.asarray(z), 1.0, 1e-4)) == 0.0
    collapsed = jnp.ones((8, 4))
    assert float(objective.vicreg_variance(collapsed, 1.0, 1e-4)) == pytest.approx(1.0 - 1e-2, rel=1e-4)


def test_vicreg_covariance_matches_numpy_and_ignores_the_diagonal():
    z = np.random.default_rng(2).normal(size=(32, 5)).astype(np.float32)
    cov = np.cov(z, rowvar=False)
    expected = (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / 5
    assert float(objective.vicreg_covariance(jnp.asarray(z))) == pytest.approx(expected, rel=1e-4)
    independent = np.diag([1.0, 2.0, 3.0]).astype(np.float32)
    decorrelated = np.concatenate([independent, -independent])
    assert float(objective.vicreg_covariance(jnp.asarray(decorrelated))) == pytest.approx(0.0, abs=1e-6)


def test_normalise_targets_is_parameter_free_layer_norm():
    x = np.random.default_rng(3).normal(loc=3.0, scale=2.0, size=(2, 3, 8)).astype(np.float32)
    y = np.asarray(objective.normalise_targets(jnp.asarray(x)))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_prediction_losses():
    pred = jnp.array([[0.0, 0.5], [3.0, -2.0]])
    target = jnp.zeros((2, 2))
    # Huber(delta=1): 0.5 x^2 below 1, |x| - 0.5 above.
    expected_huber = np.mean([0.0, 0.125, 2.5, 1.5])
    assert float(objective.prediction_loss(pred, target, "smooth_l1")) == pytest.approx(expected_huber)
    # l2: squared norm per token, mean over tokens.
    assert float(objective.prediction_loss(pred, target, "l2")) == pytest.approx((0.25 + 13.0) / 2)
    with pytest.raises(ValueError, match="objective.loss"):
        objective.prediction_loss(pred, target, "l1")


def test_vicreg_invariance_averages_every_global_to_other_view_pair():
    z = np.random.default_rng(4).normal(size=(6, 4, 3)).astype(np.float32)  # [B, V, D], 2 global views
    pairs = [(g, v) for g in range(2) for v in range(4) if v != g]
    expected = np.mean([np.mean((z[:, g] - z[:, v]) ** 2) for g, v in pairs])
    assert float(objective.vicreg_invariance(jnp.asarray(z), 2)) == pytest.approx(expected, rel=1e-5)
    # Two views: VICReg's own MSE(Z, Z'); one view: nothing to be invariant to.
    two = z[:, :2]
    assert float(objective.vicreg_invariance(jnp.asarray(two), 2)) == pytest.approx(
        np.mean((two[:, 0] - two[:, 1]) ** 2), rel=1e-5
    )
    assert float(objective.vicreg_invariance(jnp.asarray(z[:, :1]), 1)) == 0.0


def test_batch_stat_norm_matches_numpy_per_view():
    x = np.random.default_rng(5).normal(loc=2.0, scale=3.0, size=(8, 2, 5)).astype(np.float32)
    norm = BatchStatNorm()
    params = norm.init(jax.random.key(0), jnp.asarray(x))["params"]
    params = {"scale": jnp.full(5, 2.0), "bias": jnp.full(5, 0.5)}
    y = np.asarray(norm.apply({"params": params}, jnp.asarray(x)))
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * 2.0 + 0.5  # statistics per view and feature
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def _tiny_models(**model_overrides):
    config = config_lib.base_config()
    config.data.image_size = 16
    config.model.variant = "Ti/4"
    config.model.width, config.model.depth, config.model.num_heads = 32, 1, 2
    config.model.predictor_width, config.model.predictor_depth = 16, 1
    config.masks.num_targets = 2
    config.masks.target_scale = (0.15, 0.2)
    config.masks.num_context_tokens = 4
    for key, value in model_overrides.items():
        config.model[key] = value
    encoder, predictor = factory.build_encoder(config), factory.build_predictor(config)
    expander = factory.build_expander(config)
    sampler = MultiBlockMaskSampler.from_config(config.masks, factory.patch_grid(config))
    return config, encoder, predictor, expander, sampler


def _views_batch(sampler, rng, batch=6, views=2, local_views=0):
    masks = [[sampler.sample(rng) for _ in range(views)] for _ in range(batch)]
    out = {
        "image": jnp.asarray(rng.normal(size=(batch, views, 16, 16, 3)), jnp.float32),
        "context_idx": jnp.asarray(np.array([[m[0] for m in row] for row in masks])),
        "target_idx": jnp.asarray(np.array([[m[1] for m in row] for row in masks])),
    }
    if local_views:
        out["local_image"] = jnp.asarray(rng.normal(size=(batch, local_views, 8, 8, 3)), jnp.float32)
    return out


def _init(config, encoder, predictor, expander, batch):
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    optimizer = optim.make_optimizer(config.optimizer, 10)
    state = state_lib.init_train_state(
        jax.random.key(0),
        encoder=encoder,
        predictor=predictor,
        optimizer=optimizer,
        batch=shapes,
        expander=expander,
    )
    # A target different from the online encoder, as after some training.
    target = jax.tree.map(lambda p: p * 1.1 + 0.01, state.target_encoder)
    return state.params, target


@pytest.mark.slow
def test_one_view_without_expander_is_the_original_rejepa_loss():
    config, encoder, predictor, _, sampler = _tiny_models()
    batch = _views_batch(sampler, np.random.default_rng(6), views=1)
    single = {k: v[:, 0] for k, v in batch.items()}  # The single-view batch contract: no view axis.
    params, target = _init(config, encoder, predictor, None, single)
    loss, terms = objective.jepa_loss(
        params, target, single, encoder=encoder, predictor=predictor, objective=config.objective
    )
    # The loss as REJEPA computed it before views existed.
    target_tokens = objective.normalise_targets(encoder.apply({"params": target}, single["image"]))
    targets = objective.gather_tokens(target_tokens, single["target_idx"])
    context = encoder.apply({"params": params["context_encoder"]}, single["image"], single["context_idx"])
    predictions = predictor.apply(
        {"params": params["predictor"]}, context, single["context_idx"], single["target_idx"]
    )
    pooled = context.mean(axis=1)
    expected = (
        optax.huber_loss(predictions, targets, delta=1.0).mean()
        + 1.0 * objective.vicreg_variance(pooled, 1.0, 1e-4)
        + 0.04 * objective.vicreg_covariance(pooled)
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["vicreg_invariance"]) == 0.0


def _two_view_setup(seed: int):
    """Tiny models, a two-view batch, their initial params and the loss keywords (no expander)."""
    config, encoder, predictor, _, sampler = _tiny_models()
    batch = _views_batch(sampler, np.random.default_rng(seed), views=2)
    params, target = _init(config, encoder, predictor, None, batch)
    kw = dict(encoder=encoder, predictor=predictor, objective=config.objective)
    return config, encoder, batch, params, target, kw


@pytest.mark.slow
def test_two_views_average_the_per_view_terms_and_add_their_invariance():
    _, encoder, batch, params, target, kw = _two_view_setup(7)
    loss, terms = objective.jepa_loss(params, target, batch, **kw)
    per_view = [
        objective.jepa_loss(params, target, {k: v[:, i] for k, v in batch.items()}, **kw)[1] for i in range(2)
    ]
    for key in ("pred_loss", "vicreg_variance", "vicreg_covariance"):
        assert float(terms[key]) == pytest.approx(np.mean([float(t[key]) for t in per_view]), rel=1e-5)
    pooled = [
        np.asarray(
            encoder.apply(
                {"params": params["context_encoder"]}, batch["image"][:, i], batch["context_idx"][:, i]
            )
        ).mean(1)
        for i in range(2)
    ]
    invariance = np.mean((pooled[0] - pooled[1]) ** 2)
    assert float(terms["vicreg_invariance"]) == pytest.approx(invariance, rel=1e-4)
    expected = terms["pred_loss"] + invariance + terms["vicreg_variance"] + 0.04 * terms["vicreg_covariance"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
def test_local_views_enter_the_invariance_through_the_expander():
    config, encoder, predictor, expander, sampler = _tiny_models(expander_widths=(24, 12))
    batch = _views_batch(sampler, np.random.default_rng(8), views=1, local_views=2)
    batch = {k: v[:, 0] if k != "local_image" else v for k, v in batch.items()}
    params, target = _init(config, encoder, predictor, expander, batch)
    assert params["expander"]["dense_0"]["kernel"].shape == (32, 24)
    assert params["expander"]["out"]["kernel"].shape == (24, 12) and "bias" not in params["expander"]["out"]
    _, terms = objective.jepa_loss(
        params,
        target,
        batch,
        encoder=encoder,
        predictor=predictor,
        objective=config.objective,
        expander=expander,
    )
    glob = encoder.apply({"params": params["context_encoder"]}, batch["image"], batch["context_idx"]).mean(1)
    local = encoder.apply(
        {"params": params["context_encoder"]}, batch["local_image"].reshape(-1, 8, 8, 3)
    ).mean(1)
    pooled = jnp.concatenate([glob[:, None], local.reshape(6, 2, 32)], axis=1)
    z = np.asarray(expander.apply({"params": params["expander"]}, pooled))
    # One global view: pairs (global, local 1) and (global, local 2).
    invariance = np.mean([np.mean((z[:, 0] - z[:, v]) ** 2) for v in (1, 2)])
    assert float(terms["vicreg_invariance"]) == pytest.approx(invariance, rel=1e-4)
    variance = np.mean([float(objective.vicreg_variance(jnp.asarray(z[:, v]), 1.0, 1e-4)) for v in range(3)])
    assert float(terms["vicreg_variance"]) == pytest.approx(variance, rel=1e-4)


@pytest.mark.slow
def test_prediction_weight_zero_drops_the_prediction_and_its_gradient():
    config, encoder, predictor, _, sampler = _tiny_models()
    config.objective.prediction_weight = 0.0
    batch = _views_batch(sampler, np.random.default_rng(9), views=2)
    params, target = _init(config, encoder, predictor, None, batch)

    def loss_fn(p):
        return objective.jepa_loss(
            p, target, batch, encoder=encoder, predictor=predictor, objective=config.objective
        )

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    assert "pred_loss" not in terms
    vicreg = terms["vicreg_invariance"] + terms["vicreg_variance"] + 0.04 * terms["vicreg_covariance"]
    assert float(loss) == pytest.approx(float(vicreg), rel=1e-6)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["predictor"]))
    assert float(optax.tree.norm(grads["context_encoder"])) > 0.0


@pytest.mark.slow
def test_predicting_only_the_first_view_keeps_its_loss_and_the_invariance():
    config, _, batch, params, target, kw = _two_view_setup(10)
    _, both = objective.jepa_loss(params, target, batch, **kw)
    _, first_alone = objective.jepa_loss(params, target, {k: v[:, 0] for k, v in batch.items()}, **kw)
    config.objective.predicted_views = 1
    _, first = objective.jepa_loss(params, target, batch, **kw)
    assert float(first["pred_loss"]) == pytest.approx(float(first_alone["pred_loss"]), rel=1e-5)
    assert float(first["pred_loss"]) != pytest.approx(float(both["pred_loss"]), rel=1e-3)
    for key in ("vicreg_invariance", "vicreg_variance", "vicreg_covariance"):
        assert float(first[key]) == pytest.approx(float(both[key]), rel=1e-5)
    config.objective.predicted_views = 3
    with pytest.raises(ValueError, match="predicted_views"):
        objective.jepa_loss(params, target, batch, **kw)
