"""Schedules and the AdamW weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rejepa_jax import config_lib, optim


def _opt(**kw):
    config = config_lib.base_config().optimizer
    config.update(kw)
    return config


def test_learning_rate_warmup_then_cosine():
    schedule = optim.learning_rate_schedule(_opt(lr=1e-3, start_lr=2e-4, final_lr=1e-6, warmup_steps=10), 110)
    assert float(schedule(0)) == pytest.approx(2e-4)
    assert float(schedule(5)) == pytest.approx(6e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(1e-6)
    assert float(schedule(500)) == pytest.approx(1e-6)


def test_weight_decay_rises_on_a_cosine_and_ema_rises_linearly():
    wd = optim.weight_decay_schedule(_opt(weight_decay=0.04, final_weight_decay=0.4), 100)
    assert float(wd(0)) == pytest.approx(0.04)
    assert float(wd(50)) == pytest.approx(0.22)
    assert float(wd(100)) == pytest.approx(0.4)
    ema = optim.ema_momentum_schedule(config_lib.base_config().ema, 100)
    assert float(ema(0)) == pytest.approx(0.996)
    assert float(ema(25)) == pytest.approx(0.997)
    assert float(ema(100)) == pytest.approx(1.0)


def test_no_weight_decay_on_biases_and_norms():
    params = {"dense": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}, "norm": {"scale": jnp.ones(3)}}
    tx = optim.make_optimizer(
        _opt(lr=0.1, start_lr=0.1, final_lr=0.1, weight_decay=0.5, final_weight_decay=0.5), 10
    )
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # Zero gradient: only decoupled weight decay moves a parameter, -lr * wd * p.
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.05 * np.ones((3, 3)), rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)
    np.testing.assert_allclose(updates["norm"]["scale"], 0.0)


def test_gradient_clipping_happens_before_adam():
    params = {"w": jnp.zeros((4, 4))}
    grads = {"w": jnp.full((4, 4), 100.0)}
    for clip, expected_norm in ((1.0, 1.0), (0.0, 400.0)):
        tx = optim.make_optimizer(_opt(grad_clip_norm=clip), 10)
        _, state = tx.update(grads, tx.init(params), params)
        # Adam's first moment after one step is (1 - b1) * the gradient it was given.
        mu = optax.tree_utils.tree_get(state, "mu")
        assert float(optax.tree.norm(mu)) == pytest.approx(0.1 * expected_norm, rel=1e-5)


def test_ema_initial_weight_is_the_product_of_the_momenta_applied():
    ema = config_lib.base_config().ema
    schedule = optim.ema_momentum_schedule(ema, 200)
    expected = np.prod([float(schedule(i)) for i in range(150)], dtype=np.float64)
    assert optim.ema_initial_weight(ema, 200, 150) == pytest.approx(expected, rel=1e-5)
    assert optim.ema_initial_weight(ema, 200, 0) == 1.0
    ema.start = ema.end = 0.5
    assert optim.ema_initial_weight(ema, 10, 3) == pytest.approx(0.125)
    # The example: 0.996 -> 1 over 832 steps keeps about a fifth of the initial weights.
    assert optim.ema_initial_weight(config_lib.base_config().ema, 832, 832) == pytest.approx(0.19, abs=0.01)
