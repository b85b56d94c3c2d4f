"""Multi-block mask sampler: block statistics, disjointness, static sizes, determinism."""

import numpy as np
import pytest

from rejepa_jax import config_lib
from rejepa_jax.masking import (
    MaskSamplingError,
    MultiBlockMaskSampler,
    RandomMaskSampler,
    block_size,
    make_mask_sampler,
)


def _block_dims(idx: np.ndarray, grid_w: int) -> tuple[int, int]:
    rows, cols = np.divmod(idx, grid_w)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_shapes_are_static_and_sorted():
    sampler = MultiBlockMaskSampler((14, 14))
    rng = np.random.default_rng(0)
    for _ in range(50):
        context, targets = sampler.sample(rng)
        assert context.shape == (sampler.num_context_tokens,)
        assert targets.shape == (4, sampler.num_target_tokens)
        assert context.dtype == np.int32 and targets.dtype == np.int32
        assert np.all(np.diff(context) > 0)
        assert np.all(np.diff(targets, axis=1) > 0)


def test_context_and_targets_are_disjoint_and_in_range():
    sampler = MultiBlockMaskSampler((8, 8))
    rng = np.random.default_rng(1)
    for _ in range(200):
        context, targets = sampler.sample(rng)
        assert not set(context.tolist()) & set(targets.ravel().tolist())
        assert context.min() >= 0 and max(context.max(), targets.max()) < 64


def test_target_blocks_follow_scale_and_aspect_ranges():
    # With num_target_tokens equal to the full block (no subset), each target is a whole rectangle.
    grid = (16, 16)
    sampler = MultiBlockMaskSampler(grid, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5))
    rng = np.random.default_rng(2)
    sizes = [block_size(u, (0.15, 0.2), (0.75, 1.5), grid) for u in np.linspace(0, 1, 101)]
    areas = [h * w for h, w in sizes]
    scales, aspects = [], []
    for _ in range(300):
        _, targets = sampler.sample(rng)
        h, w = _block_dims(targets[0], grid[1])
        scales.append(h * w / 256)
        aspects.append(h / w)
    # Bounding boxes of the kept subset are never larger than the largest allowed block.
    assert max(scales) <= max(areas) / 256 + 1e-9
    assert min(areas) / 256 >= 0.12 and max(areas) / 256 <= 0.22
    # Rounded (h, w) keep the aspect range up to rounding of one patch.
    assert 0.6 <= np.median(aspects) <= 1.6
    # The reference's correlated draw: the smallest block is the u=0 block, the largest u=1.
    assert sizes[0][0] * sizes[0][1] == min(areas)


def test_block_statistics_match_the_reference_rules_without_subsetting():
    grid = (14, 14)
    rng = np.random.default_rng(3)
    draws = [block_size(rng.random(), (0.15, 0.2), (0.75, 1.5), grid) for _ in range(4000)]
    scales = np.array([h * w for h, w in draws]) / 196
    aspects = np.array([h / w for h, w in draws])
    assert 0.15 <= scales.mean() <= 0.2
    assert np.all(scales >= 0.12) and np.all(scales <= 0.22)
    assert 0.75 <= aspects.mean() <= 1.5
    # Same uniform draw for scale and aspect: taller blocks are also larger.
    assert np.corrcoef(scales, aspects)[0, 1] > 0.5
    # Blocks are capped at grid - 1.
    context = [block_size(u, (0.85, 1.0), (1.0, 1.0), grid) for u in np.linspace(0, 1, 50)]
    assert max(h for h, _ in context) == 13


def test_every_corner_position_is_reachable():
    # The reference never puts a corner in the last valid row/column; this sampler does.
    sampler = MultiBlockMaskSampler(
        (8, 8), num_targets=1, target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0)
    )
    rng = np.random.default_rng(4)
    tops = set()
    for _ in range(500):
        _, targets = sampler.sample(rng)
        tops.add(int(targets[0].min() // 8))
    assert tops == set(range(8 - 4 + 1))


def test_random_subset_is_spread_not_raster_prefix():
    # Keeping a random subset (not the first indices) makes the kept context cover low and high rows.
    sampler = MultiBlockMaskSampler((14, 14), num_context_tokens=20)
    rng = np.random.default_rng(5)
    mean_rows = [np.mean(sampler.sample(rng)[0] // 14) for _ in range(300)]
    assert 5.0 < np.mean(mean_rows) < 8.0


def test_deterministic_given_seed():
    sampler = MultiBlockMaskSampler((8, 8))
    a = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [sampler.sample(np.random.default_rng(7)) for _ in range(3)]
    for (ca, ta), (cb, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_array_equal(ta, tb)
    c = sampler.sample(np.random.default_rng(8))
    assert not (np.array_equal(a[0][0], c[0]) and np.array_equal(a[0][1], c[1]))


def test_auto_sizes_are_deterministic_and_feasible():
    a, b = MultiBlockMaskSampler((8, 8)), MultiBlockMaskSampler((8, 8))
    assert a.shapes == b.shapes
    assert a.num_target_tokens == a.smallest_target_block()
    assert 1 <= a.num_context_tokens < 64


def test_infeasible_sizes_raise_clear_errors():
    with pytest.raises(MaskSamplingError, match="num_target_tokens"):
        MultiBlockMaskSampler((8, 8), num_target_tokens=40)
    sampler = MultiBlockMaskSampler((8, 8), num_context_tokens=60, max_tries=5)
    with pytest.raises(MaskSamplingError, match="num_context_tokens"):
        sampler.sample(np.random.default_rng(0))
    with pytest.raises(MaskSamplingError, match="target_scale"):
        MultiBlockMaskSampler((8, 8), target_scale=(0.3, 0.1))


def test_random_masks_hide_the_configured_ratio_and_partition_the_grid():
    sampler = RandomMaskSampler((8, 8), mask_ratio=0.75)
    assert sampler.shapes.num_context_tokens == 16 and sampler.shapes.num_target_tokens == 48
    rng = np.random.default_rng(0)
    seen = np.zeros(64)
    for _ in range(200):
        visible, masked = sampler.sample(rng)
        assert masked.shape == (1, 48) and visible.dtype == np.int32
        assert sorted(np.concatenate([visible, masked[0]]).tolist()) == list(range(64))
        seen[visible] += 1
    assert seen.min() > 20  # Every patch is visible sometimes: uniform, no positional bias.
    with pytest.raises(MaskSamplingError, match="mask_ratio"):
        RandomMaskSampler((8, 8), mask_ratio=1.0)


def test_mask_kind_comes_from_the_config():
    masks = config_lib.base_config().masks
    assert isinstance(make_mask_sampler(masks, (8, 8)), MultiBlockMaskSampler)
    masks.kind = "random"
    assert isinstance(make_mask_sampler(masks, (8, 8)), RandomMaskSampler)
    masks.kind = "grid"
    with pytest.raises(MaskSamplingError, match="masks.kind"):
        make_mask_sampler(masks, (8, 8))


def test_a_size_that_can_never_be_placed_is_redrawn_not_fatal():
    # One target on a 14x14 grid beside a 13x13 context that must keep 100 patches: any target block
    # of side >= 10 overlaps the context by >= 81 patches wherever it sits, so a first size draw of
    # u >= ~0.5 can never be placed. Drawing the size once per image aborted about half the seeds.
    grid = (14, 14)
    settings = dict(
        num_targets=1,
        target_scale=(0.1, 0.8),
        target_aspect=(1.0, 1.0),
        context_scale=(1.0, 1.0),
        num_context_tokens=100,
    )
    assert block_size(1.0, (0.1, 0.8), (1.0, 1.0), grid) == (12, 12)
    assert block_size(0.0, (1.0, 1.0), (1.0, 1.0), grid) == (13, 13)
    sampler = MultiBlockMaskSampler(grid, **settings)
    assert sampler.shapes == MultiBlockMaskSampler(grid, **settings).shapes
    first_draws = [np.random.default_rng(seed).random() for seed in range(40)]
    assert sum(block_size(u, (0.1, 0.8), (1.0, 1.0), grid)[0] >= 10 for u in first_draws) >= 10
    for seed in range(40):
        context, targets = sampler.sample(np.random.default_rng(seed))
        assert context.shape == (100,) and targets.shape == (1, sampler.num_target_tokens)
        assert context.dtype == np.int32 and targets.dtype == np.int32
        assert np.all(np.diff(context) > 0) and np.all(np.diff(targets, axis=1) > 0)
        assert not set(context.tolist()) & set(targets.ravel().tolist())
        assert max(context.max(), targets.max()) < 196
        again = sampler.sample(np.random.default_rng(seed))
        np.testing.assert_array_equal(context, again[0])
        np.testing.assert_array_equal(targets, again[1])
