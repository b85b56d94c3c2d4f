"""Recall of an approximate ranking against the exact one, on hand-computed cases."""

import numpy as np
import pytest

from rejepa_jax.retrieval.ann_recall import recall_vs_exact_at_k


def test_recall_vs_exact_at_k_hand_computed():
    approx = np.array([[1, 2, 3], [4, 5, 6], [7, 7, 8]])
    exact = np.array([[3, 2, 9], [7, 8, -1], [7, 8, 9]])
    # Row 0: 2 of 3 found; row 1: 0 of the 2 valid entries; row 2: a repeated 7 counts once, 2 of 3.
    assert recall_vs_exact_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    # k=2 looks at the first two columns of both sides: 1/2, 0/2, 1/2 (7 found; 8 is beyond rank 2).
    assert recall_vs_exact_at_k(approx, exact, 2) == pytest.approx((0.5 + 0 + 0.5) / 3)
    # A query whose exact list is empty has nothing to miss.
    assert recall_vs_exact_at_k(np.array([[5]]), np.array([[-1]]), 1) == 1.0
