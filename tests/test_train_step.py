"""The train step: the target encoder gets no gradient, EMA after AdamW, one trace, learning."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rejepa_jax import config_lib, objective, optim
from rejepa_jax import state as state_lib
from rejepa_jax.masking import MultiBlockMaskSampler
from rejepa_jax.models import factory
from rejepa_jax.train_step import make_train_step, zero_gradients


def _tiny_config():
    config = config_lib.base_config()
    config.batch_size = 8
    config.total_steps = 50
    config.data.image_size = 32
    config.model.variant = "Ti/8"
    config.model.width, config.model.depth, config.model.num_heads = 32, 1, 2
    config.model.predictor_width, config.model.predictor_depth = 16, 1
    config.optimizer.warmup_steps = 2
    config.masks.num_targets = 2
    config.masks.target_scale = (0.2, 0.3)
    return config


def _setup(config):
    encoder, predictor = factory.build_encoder(config), factory.build_predictor(config)
    sampler = MultiBlockMaskSampler.from_config(config.masks, factory.patch_grid(config))
    optimizer = optim.make_optimizer(config.optimizer, config.total_steps)
    shapes = state_lib.batch_shapes(config.batch_size, 32, 3, sampler.shapes)
    state = state_lib.init_train_state(
        jax.random.key(0), encoder=encoder, predictor=predictor, optimizer=optimizer, batch=shapes
    )
    return encoder, predictor, sampler, optimizer, state


def _batch(sampler, rng, batch_size=8):
    masks = [sampler.sample(rng) for _ in range(batch_size)]
    return {
        "image": jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32),
        "context_idx": jnp.asarray(np.stack([m[0] for m in masks])),
        "target_idx": jnp.asarray(np.stack([m[1] for m in masks])),
    }


@pytest.mark.slow
def test_target_starts_as_a_copy_and_receives_no_gradient():
    config = _tiny_config()
    encoder, predictor, sampler, _, state = _setup(config)
    chex.assert_trees_all_equal(state.target_encoder, state.params["context_encoder"])
    batch = _batch(sampler, np.random.default_rng(0))
    loss_fn = functools.partial(
        objective.jepa_loss, encoder=encoder, predictor=predictor, objective=config.objective
    )
    grad_fn = jax.jit(jax.grad(lambda p, t: loss_fn(p, t, batch)[0], argnums=(0, 1)))
    grads_online, grads_target = grad_fn(state.params, state.target_encoder)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads_target))
    assert float(optim.optax.tree.norm(grads_online["context_encoder"])) > 0.0
    assert float(optim.optax.tree.norm(grads_online["predictor"])) > 0.0


@pytest.mark.slow
def test_ema_is_applied_after_the_optimizer_update():
    config = _tiny_config()
    encoder, predictor, sampler, optimizer, state = _setup(config)
    step = jax.jit(make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer))
    old_target = jax.tree.map(np.asarray, state.target_encoder)
    new_state, metrics = step(state, _batch(sampler, np.random.default_rng(1)))
    momentum = float(metrics["ema_momentum"])
    assert momentum == pytest.approx(0.996)
    expected = jax.tree.map(
        lambda t, o: momentum * t + (1 - momentum) * np.asarray(o),
        old_target,
        new_state.params["context_encoder"],
    )
    chex.assert_trees_all_close(new_state.target_encoder, expected, rtol=1e-6, atol=1e-7)
    # The online encoder moved; the target moved only by (1 - m) of that.
    assert int(new_state.step) == 1
    assert jax.tree.structure(new_state.target_encoder) == jax.tree.structure(
        new_state.params["context_encoder"]
    )


@pytest.mark.slow
def test_step_traces_once_across_batches_with_different_masks():
    config = _tiny_config()
    encoder, predictor, sampler, optimizer, state = _setup(config)
    step_fn = chex.assert_max_traces(
        make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer), n=1
    )
    step = jax.jit(step_fn, donate_argnums=0)
    rng = np.random.default_rng(2)
    for _ in range(3):
        state, _ = step(state, _batch(sampler, rng))
    assert int(state.step) == 3


def _final_norm_bias(params):
    return np.asarray(params["context_encoder"]["blocks"]["norm"]["bias"])


@pytest.mark.parametrize("prediction_weight", [0.0, 1.0])
@pytest.mark.slow
def test_without_prediction_the_final_norm_bias_is_unseen_and_held_fixed(prediction_weight):
    config = _tiny_config()
    config.objective.prediction_weight = prediction_weight
    encoder, predictor, sampler, optimizer, state = _setup(config)
    batch = _batch(sampler, np.random.default_rng(6))
    loss_fn = functools.partial(
        objective.jepa_loss, encoder=encoder, predictor=predictor, objective=config.objective
    )
    shift = jnp.asarray(np.random.default_rng(7).normal(size=config.model.width), jnp.float32)
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, p: (
            p + shift if jax.tree_util.keystr(path) == "['context_encoder']['blocks']['norm']['bias']" else p
        ),
        state.params,
    )
    loss, shifted_loss = (float(loss_fn(p, state.target_encoder, batch)[0]) for p in (state.params, shifted))
    step = jax.jit(make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer))
    trained = state
    for seed in range(3):
        trained, _ = step(trained, _batch(sampler, np.random.default_rng(seed)))
    moved = np.abs(_final_norm_bias(trained.params) - _final_norm_bias(state.params)).max()
    scale_moved = np.abs(
        np.asarray(trained.params["context_encoder"]["blocks"]["norm"]["scale"])
        - np.asarray(state.params["context_encoder"]["blocks"]["norm"]["scale"])
    ).max()
    assert scale_moved > 0  # The rest of the encoder trains either way.
    if prediction_weight:  # The predictor reads the encoder's tokens: the bias gets a gradient.
        assert objective.params_without_signal(config) == ()
        assert moved > 0
    else:  # VICReg's terms are blind to one shift of every embedding: the bias stays as initialised.
        assert objective.params_without_signal(config) == (objective.ENCODER_FINAL_NORM_BIAS,)
        assert shifted_loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert moved == 0.0


def test_zero_gradients_names_a_missing_path():
    grads = {"encoder": {"w": jnp.ones(2)}}
    zeroed = zero_gradients(grads, (("encoder", "w"),))
    assert not np.asarray(zeroed["encoder"]["w"]).any()
    with pytest.raises(ValueError, match="encoder', 'bias"):
        zero_gradients(grads, (("encoder", "bias"),))


@pytest.mark.slow
def test_training_reduces_the_prediction_loss_on_a_fixed_batch():
    config = _tiny_config()
    config.objective.vicreg = False
    encoder, predictor, sampler, optimizer, state = _setup(config)
    step = jax.jit(make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer))
    batch = _batch(sampler, np.random.default_rng(3))
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["pred_loss"]))
    assert losses[-1] < 0.8 * losses[0]
    assert all(np.isfinite(losses))


@pytest.mark.slow
def test_mae_baseline_reconstructs_pixels_and_learns():
    config = _tiny_config()
    config.method = "mae"
    config.masks.kind = "random"
    config.optimizer.lr = config.optimizer.start_lr = 1e-2
    encoder, predictor, sampler, optimizer, state = _setup(config)
    assert state.params["predictor"]["proj"]["kernel"].shape[-1] == 8 * 8 * 3  # One patch of pixels.
    step = jax.jit(make_train_step(config, encoder=encoder, predictor=predictor, optimizer=optimizer))
    batch = _batch(sampler, np.random.default_rng(4))
    # Smooth images (a linear ramp per image) make the hidden patches predictable from the visible.
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    angles = np.random.default_rng(5).uniform(0, 2 * np.pi, 8)
    ramps = np.cos(angles)[:, None, None] * xx + np.sin(angles)[:, None, None] * yy
    batch["image"] = jnp.asarray(np.repeat(ramps[..., None], 3, axis=-1), jnp.float32)
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    # Normalised pixel targets have unit variance, so an untrained decoder starts near 1.
    assert 0.5 < losses[0] < 2.0 and losses[-1] < 0.9 * losses[0]
    assert "vicreg_variance" not in metrics
