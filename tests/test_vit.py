"""ViT encoder and predictor: position embeddings, patch embedding, token subsets, shapes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rejepa_jax import config_lib
from rejepa_jax.models import factory
from rejepa_jax.models.vit import (
    Predictor,
    VisionTransformer,
    block_diagonal_mask,
    gather_tokens,
    parse_variant,
    posemb_sincos_2d,
)


def test_parse_variant_sizes_and_overrides():
    assert parse_variant("S/16") == parse_variant("S/16", width=0)
    shape = parse_variant("L/14")
    assert (shape.width, shape.depth, shape.num_heads, shape.patch_size) == (1024, 24, 16, 14)
    assert parse_variant("Ti/8", depth=2).depth == 2
    with pytest.raises(ValueError, match="model.variant"):
        parse_variant("XL/16")
    with pytest.raises(ValueError, match="divisible"):
        parse_variant("Ti/8", width=100, num_heads=3)


def test_posemb_follows_the_reference_layout():
    emb = posemb_sincos_2d(3, 5, 8)
    assert emb.shape == (15, 8)
    # First half encodes the column: equal within a column, different across columns.
    np.testing.assert_allclose(emb[0, :4], emb[5, :4])  # token (0,0) vs (1,0)
    assert not np.allclose(emb[0, :4], emb[1, :4])  # (0,0) vs (0,1)
    # Second half encodes the row.
    np.testing.assert_allclose(emb[0, 4:], emb[1, 4:])
    # At position 0: sin = 0, cos = 1.
    np.testing.assert_allclose(emb[0], [0, 0, 1, 1, 0, 0, 1, 1])
    # Column 1, lowest frequency 1: sin(1).
    assert emb[1, 0] == pytest.approx(np.sin(1.0), rel=1e-6)


@pytest.mark.slow
def test_patch_embedding_equals_a_strided_convolution():
    model = VisionTransformer(patch_size=4, width=16, depth=1, num_heads=2)
    images = jax.random.normal(jax.random.key(0), (2, 8, 8, 5))
    params = model.init(jax.random.key(1), images)["params"]
    kernel = params["patch_embed"]["kernel"].reshape(4, 4, 5, 16)
    conv = jax.lax.conv_general_dilated(
        images, kernel, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    patches_then_dense = jnp.einsum("bhpwqc,pqcd->bhwd", images.reshape(2, 2, 4, 2, 4, 5), kernel)
    np.testing.assert_allclose(conv, patches_then_dense, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_encoder_shapes_and_token_subset():
    model = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2)
    images = jax.random.normal(jax.random.key(0), (3, 32, 32, 4))
    params = model.init(jax.random.key(1), images)["params"]
    full = model.apply({"params": params}, images)
    assert full.shape == (3, 16, 32)
    keep = jnp.array([[0, 5, 9], [1, 2, 3], [15, 14, 0]], jnp.int32)
    subset = model.apply({"params": params}, images, keep)
    assert subset.shape == (3, 3, 32)
    # A subset sees fewer tokens, so it differs from gathering the full output.
    assert not np.allclose(subset, gather_tokens(full, keep), atol=1e-4)
    # Keeping every token in order is the full forward.
    everything = jnp.tile(jnp.arange(16, dtype=jnp.int32), (3, 1))
    np.testing.assert_allclose(
        model.apply({"params": params}, images, everything), full, rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params():
    model = VisionTransformer(patch_size=8, width=32, depth=1, num_heads=2, dtype=jnp.bfloat16)
    images = jnp.ones((1, 16, 16, 3))
    params = model.init(jax.random.key(0), images)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert model.apply({"params": params}, images).dtype == jnp.bfloat16


@pytest.mark.slow
def test_remat_gives_the_same_outputs():
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    plain = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2)
    remat = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2, remat=True)
    params = plain.init(jax.random.key(1), images)["params"]
    np.testing.assert_allclose(
        plain.apply({"params": params}, images), remat.apply({"params": params}, images), rtol=1e-6
    )


@pytest.mark.slow
def test_predictor_predicts_each_target_block_in_its_own_sequence():
    predictor = Predictor(grid=(4, 4), out_features=32, width=16, depth=1, num_heads=2)
    context = jax.random.normal(jax.random.key(0), (2, 5, 32))
    context_idx = jnp.array([[0, 1, 2, 3, 4]] * 2, jnp.int32)
    target_idx = jnp.array([[[8, 9], [12, 13], [10, 11]]] * 2, jnp.int32)
    params = predictor.init(jax.random.key(1), context, context_idx, target_idx)["params"]
    out = predictor.apply({"params": params}, context, context_idx, target_idx)
    assert out.shape == (2, 3, 2, 32)
    # Block 0's prediction does not depend on which other blocks are predicted with it.
    alone = predictor.apply({"params": params}, context, context_idx, target_idx[:, :1])
    np.testing.assert_allclose(out[:, :1], alone, rtol=1e-5, atol=1e-5)
    assert params["mask_token"].shape == (1, 1, 1, 16)


def test_block_diagonal_mask_lets_each_block_see_the_context_and_itself():
    mask = np.asarray(block_diagonal_mask(num_context=2, num_blocks=2, block_size=1))
    expected = np.array(
        [
            [1, 1, 0, 0],  # context rows: context only
            [1, 1, 0, 0],
            [1, 1, 1, 0],  # block 1: context and itself
            [1, 1, 0, 1],  # block 2: context and itself
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.slow
def test_joint_predictor_keeps_blocks_apart_and_shares_the_per_block_params():
    kwargs = dict(grid=(4, 4), out_features=32, width=16, depth=2, num_heads=2)
    joint, per_block = Predictor(**kwargs, joint_targets=True), Predictor(**kwargs)
    context = jax.random.normal(jax.random.key(0), (2, 5, 32))
    context_idx = jnp.array([[0, 1, 2, 3, 4]] * 2, jnp.int32)
    target_idx = jnp.array([[[8, 9], [12, 13], [10, 11]]] * 2, jnp.int32)
    params = per_block.init(jax.random.key(1), context, context_idx, target_idx)["params"]
    params = jax.tree.map(lambda p: 25.0 * p, params)  # Weights of trained size, not 0.02.
    # Same parameter tree: a checkpoint of either layout restores into the other.
    joint_params = joint.init(jax.random.key(1), context, context_idx, target_idx)["params"]
    assert jax.tree.structure(joint_params) == jax.tree.structure(params)
    out = joint.apply({"params": params}, context, context_idx, target_idx)
    assert out.shape == (2, 3, 2, 32)
    # No block sees another: block 0 predicts the same alone, and moving block 2 leaves it unchanged.
    alone = joint.apply({"params": params}, context, context_idx, target_idx[:, :1])
    np.testing.assert_allclose(out[:, :1], alone, rtol=1e-5, atol=1e-5)
    moved = target_idx.at[:, 2].set(jnp.array([14, 15]))
    np.testing.assert_allclose(
        joint.apply({"params": params}, context, context_idx, moved)[:, :2], out[:, :2], atol=1e-5
    )
    # The context does not attend to the mask tokens here, unlike the per-block layout.
    reference = per_block.apply({"params": params}, context, context_idx, target_idx)
    assert np.abs(out - reference).max() > 1e-2 * np.abs(reference).max()


@pytest.mark.slow
def test_weights_start_as_the_reference_trunc_normal_with_std_002():
    # PyTorch's trunc_normal_(std=0.02) cuts at +-2 absolute, i.e. N(0, 0.02^2) in effect; cutting at
    # +-2 standard deviations (Flax's default bounds) would give a std of about 0.0176. The reference's
    # fix_init_weight then divides attn.proj and mlp.fc2 of block l (from 1) by sqrt(2 l).
    encoder = VisionTransformer(patch_size=8, width=256, depth=2, num_heads=4)
    images = jnp.zeros((1, 16, 16, 3))
    params = encoder.init(jax.random.key(0), images)["params"]
    predictor = Predictor(grid=(2, 2), out_features=256, width=256, depth=2, num_heads=4)
    context = jnp.zeros((1, 2, 256))
    predictor_params = predictor.init(
        jax.random.key(1), context, jnp.array([[0, 1]], jnp.int32), jnp.array([[[2, 3]]], jnp.int32)
    )["params"]
    kernels, residual_outputs, biases = [], [], []
    for tree in (params, predictor_params):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            name = jax.tree_util.keystr(path)
            block = re.search(r"block_(\d+)", name)
            if block and re.search(r"\['(proj|fc2)'\]\['kernel'\]", name):
                residual_outputs.append((name, int(block.group(1)) + 1, np.asarray(leaf)))
            elif "kernel" in name or "mask_token" in name:
                kernels.append((name, np.asarray(leaf)))
            elif "bias" in name and "norm" not in name.lower():
                biases.append(np.asarray(leaf))
    assert {"['patch_embed']['kernel']", "['embed']['kernel']", "['mask_token']"} <= {n for n, _ in kernels}
    for name, kernel in kernels:
        if kernel.size >= 50_000:
            assert abs(kernel.std() - 0.02) < 0.03 * 0.02, name
    pooled = np.concatenate([kernel.ravel() for _, kernel in kernels])
    assert abs(pooled.std() - 0.02) < 0.01 * 0.02 and abs(pooled.mean()) < 1e-4
    assert np.abs(pooled).max() > 2 * 0.02  # Not cut at two standard deviations.
    assert len(residual_outputs) == 8  # proj and fc2 of two blocks, in encoder and predictor.
    for name, layer_number, kernel in residual_outputs:
        expected = 0.02 / np.sqrt(2.0 * layer_number)
        assert abs(kernel.std() - expected) < 0.03 * expected, (name, kernel.std(), expected)
    assert biases and all(not bias.any() for bias in biases)


def _dense_kernels(init: str) -> dict[str, np.ndarray]:
    """Every Dense kernel and the mask token of a small encoder and predictor built with `init`."""
    encoder = VisionTransformer(patch_size=8, width=256, depth=2, num_heads=4, init_scheme=init)
    params = encoder.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    predictor = Predictor(grid=(2, 2), out_features=192, width=256, depth=2, num_heads=4, init_scheme=init)
    predictor_params = predictor.init(
        jax.random.key(1),
        jnp.zeros((1, 2, 256)),
        jnp.array([[0, 1]], jnp.int32),
        jnp.array([[[2, 3]]], jnp.int32),
    )["params"]
    leaves = {}
    for prefix, tree in (("encoder", params), ("predictor", predictor_params)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            name = prefix + jax.tree_util.keystr(path)
            if ("kernel" in name and "norm" not in name) or "mask_token" in name:
                leaves[name] = np.asarray(leaf)
    return leaves


@pytest.mark.slow
def test_mae_init_draws_every_dense_kernel_xavier_uniform_without_depth_rescaling():
    # MAE's reference `_init_weights`: xavier_uniform_ on every nn.Linear (the fused qkv as one
    # matrix) and on the patch embedding's weight viewed as [width, p*p*C]; mask token N(0, 0.02^2).
    kernels = _dense_kernels("mae")
    assert len([name for name in kernels if "kernel" in name]) == 2 * (2 * 4) + 3  # blocks + embeds + proj
    for name, kernel in kernels.items():
        if "mask_token" in name:
            assert abs(kernel.std() - 0.02) < 0.2 * 0.02, name
            continue
        fan_in, fan_out = kernel.shape
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= limit * (1 + 1e-6), name  # float32 rounding of the bound.
        assert np.abs(kernel).max() > 0.99 * limit, name  # Uniform up to the bound, not a normal draw.
        assert abs(kernel.std() - limit / np.sqrt(3.0)) < 0.03 * limit / np.sqrt(3.0), name
    # No 1/sqrt(2 l) rescaling: block 2's output projections have block 1's spread.
    for module in (
        "encoder['blocks']['block_{}']['attn']['proj']",
        "encoder['blocks']['block_{}']['mlp']['fc2']",
    ):
        first, second = (kernels[module.format(i) + "['kernel']"] for i in (0, 1))
        assert abs(second.std() / first.std() - 1.0) < 0.05


@pytest.mark.slow
def test_default_init_is_the_ijepa_scheme_and_unknown_schemes_are_refused():
    default = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2)
    explicit = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2, init_scheme="ijepa")
    images = jnp.zeros((1, 16, 16, 3))
    same = jax.tree_util.tree_map(
        np.array_equal,
        default.init(jax.random.key(0), images),
        explicit.init(jax.random.key(0), images),
    )
    assert all(jax.tree_util.tree_leaves(same))
    mae = VisionTransformer(patch_size=8, width=32, depth=2, num_heads=2, init_scheme="mae")
    mae_kernel = mae.init(jax.random.key(0), images)["params"]["patch_embed"]["kernel"]
    assert np.asarray(mae_kernel).std() > 4 * 0.02  # xavier on [192, 32]: std 0.095, not 0.02.
    with pytest.raises(ValueError, match=r"model\.init must be one of \('ijepa', 'mae'\), got 'xavier'"):
        VisionTransformer(patch_size=8, width=32, depth=1, num_heads=2, init_scheme="xavier").init(
            jax.random.key(0), images
        )


def test_config_model_init_reaches_the_encoder_and_predictor():
    config = config_lib.apply_overrides(config_lib.base_config(), ["model.init='mae'"])
    assert factory.build_encoder(config).init_scheme == "mae"
    assert factory.build_predictor(config).init_scheme == "mae"
    assert factory.build_encoder(config_lib.base_config()).init_scheme == "ijepa"
    config = config_lib.apply_overrides(config_lib.base_config(), ["model.init='xavier'"])
    with pytest.raises(ValueError, match=r"model\.init must be one of"):
        factory.build_encoder(config)
