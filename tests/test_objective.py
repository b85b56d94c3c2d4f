"""Objective terms against direct NumPy computations."""

import jax.numpy as jnp
import numpy as np
import pytest

from rejepa_jax import objective


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


def test_normalize_targets_is_parameter_free_layer_norm():
    x = np.random.default_rng(3).normal(loc=3.0, scale=2.0, size=(2, 3, 8)).astype(np.float32)
    y = np.asarray(objective.normalize_targets(jnp.asarray(x)))
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
