"""Collapse monitors on embeddings whose rank and spread are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from rejepa_jax.evaluation.collapse import CollapseAlarm, effective_rank, embedding_std


def _orthonormal_columns(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, r)))
    return q


@pytest.mark.parametrize("r", [1, 3, 10])
def test_effective_rank_of_a_rank_r_matrix_with_equal_singular_values_is_r(r):
    rng = np.random.default_rng(r)
    z = _orthonormal_columns(rng, 200, r) @ _orthonormal_columns(rng, 32, r).T * 5.0  # [200, 32], rank r
    assert effective_rank(z) == pytest.approx(r, rel=1e-4)


def test_effective_rank_is_at_most_the_algebraic_rank_and_drops_with_an_uneven_spectrum():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 64))  # rank 4, unequal singular values
    assert 1.0 < effective_rank(z) <= 4.0 + 1e-6
    full = rng.normal(size=(2000, 16))
    assert effective_rank(full) > 15.0  # an isotropic cloud uses every dimension
    squashed = full * np.array([1.0] + [1e-3] * 15)
    assert effective_rank(squashed) < 1.2  # one direction dominates


def test_centring_changes_the_rank_of_a_constant_embedding():
    z = np.tile(np.linspace(0.1, 0.7, 8), (50, 1))  # every example identical, means not exact in float
    assert effective_rank(z) == pytest.approx(1.0, rel=1e-4)
    assert effective_rank(z, center=True) == 0.0


def test_std_of_collapsed_embeddings_is_zero():
    z = np.tile(np.array([0.3, -2.0, 7.0]), (64, 1))
    assert embedding_std(z) == pytest.approx({"std_mean": 0.0, "std_min": 0.0}, abs=1e-12)


def test_std_reports_mean_and_minimum_over_dimensions():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 0.0]) + 5.0
    stats = embedding_std(z)
    assert stats["std_mean"] == pytest.approx(1.0, abs=0.03)  # (1 + 2 + 0) / 3
    assert stats["std_min"] == 0.0
    # Leading axes are flattened into examples: [B, T, D] behaves like [B * T, D].
    assert embedding_std(z.reshape(100, 200, 3)) == pytest.approx(stats)


def test_collapse_alarm_warns_once_per_fall_below_the_threshold():
    alarm = CollapseAlarm(0.1)
    stds = {50: 0.7, 100: 0.3, 150: 0.097, 200: 0.064, 250: 0.06, 300: 0.4, 350: 0.05}
    warned = {step: alarm.check(step, std) for step, std in stds.items()}
    assert [step for step, message in warned.items() if message] == [150, 350]  # falls, not every low step
    assert "Step 150" in warned[150] and "0.097" in warned[150] and "collapse_warning_std=0.1" in warned[150]


def test_collapse_alarm_off_at_zero_and_silent_without_the_metric():
    assert CollapseAlarm(0.0).check(1, 0.0) is None
    assert CollapseAlarm(0.1).check(1, None) is None  # a method that logs no context_std
    assert CollapseAlarm(0.1).check(1, 0.1) is None  # the threshold itself is not below it
    with pytest.raises(ValueError, match="collapse_warning_std"):
        CollapseAlarm(-0.1)
