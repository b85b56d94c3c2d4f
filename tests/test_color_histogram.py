"""The colour-histogram descriptor on images whose histograms are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from rejepa_jax.retrieval.color_histogram import color_histogram


def _solid(rgb: tuple[float, ...], size: int = 4) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.float32), (1, size, size, len(rgb))).copy()


def test_pure_red_lands_in_the_top_red_bin():
    desc = color_histogram(_solid((255.0, 0.0, 0.0)))
    assert desc.shape == (1, 512)
    # Bin (r, g, b) = (7, 0, 0) sits at (7 * 8 + 0) * 8 + 0 = 448.
    assert np.flatnonzero(desc[0]).tolist() == [448]
    assert desc[0, 448] == pytest.approx(1.0)


def test_bin_edges_split_the_range_uniformly():
    # 8 bins over [0, 255]: width 31.875, so 31 -> 0, 32 -> 1, 223 -> 6, 224 -> 7; 128 -> 4.
    desc = color_histogram(_solid((31.0, 32.0, 128.0)))
    assert np.flatnonzero(desc[0]).tolist() == [(0 * 8 + 1) * 8 + 4]
    desc = color_histogram(_solid((223.0, 224.0, 0.0)))
    assert np.flatnonzero(desc[0]).tolist() == [(6 * 8 + 7) * 8 + 0]
    # Out-of-range values are clipped into the end bins rather than dropped.
    desc = color_histogram(_solid((-5.0, 300.0, 0.0)))
    assert np.flatnonzero(desc[0]).tolist() == [(0 * 8 + 7) * 8 + 0]


def test_descriptor_is_the_unit_norm_square_root_of_the_counts():
    image = np.zeros((1, 2, 2, 3), dtype=np.float32)
    image[0, 0, 0] = (255.0, 0.0, 0.0)  # 1 red pixel, 3 black pixels
    desc = color_histogram(image)[0]
    # sqrt counts: black 3 -> sqrt 3, red 1 -> 1; norm sqrt(3 + 1) = 2.
    assert desc[0] == pytest.approx(np.sqrt(3) / 2)
    assert desc[448] == pytest.approx(1 / 2)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, size=(5, 8, 8, 3))
    np.testing.assert_allclose(np.linalg.norm(color_histogram(batch), axis=1), 1.0, rtol=1e-6)


def test_images_are_described_independently_in_a_batch():
    batch = np.concatenate([_solid((255.0, 0.0, 0.0)), _solid((0.0, 0.0, 255.0))])
    desc = color_histogram(batch)
    assert np.flatnonzero(desc[0]).tolist() == [448]
    assert np.flatnonzero(desc[1]).tolist() == [7]


@pytest.mark.parametrize("channels", [1, 2, 4, 12])
def test_other_band_counts_use_concatenated_marginals(channels):
    values = np.linspace(0.0, 255.0, channels)
    desc = color_histogram(_solid(tuple(values)), bins=4)
    assert desc.shape == (1, channels * 4)
    # Band c contributes one bin inside its own block of 4.
    want = [c * 4 + min(int(v / 255.0 * 4), 3) for c, v in enumerate(values)]
    assert np.flatnonzero(desc[0]).tolist() == want
    assert np.linalg.norm(desc[0]) == pytest.approx(1.0)


def test_value_range_and_shape_are_checked():
    desc = color_histogram(_solid((0.5, 0.0, 1.0)), bins=2, value_range=(0.0, 1.0))
    assert np.flatnonzero(desc[0]).tolist() == [(1 * 2 + 0) * 2 + 1]
    with pytest.raises(ValueError, match="N, H, W, C"):
        color_histogram(np.zeros((4, 4, 3)))
