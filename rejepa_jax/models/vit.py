"""Vision Transformer encoder as in the I-JEPA reference: no CLS token, fixed 2-D sin-cos positions.

The encoder can run on a subset of patches (`keep_idx`): position embeddings are added before the
tokens are gathered, so each kept token still carries its own position, and compute scales with the
number of kept tokens. That is how the context encoder sees only the context block.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rejepa_jax.sharding import constrain_batch

# name -> (width, depth, heads), the I-JEPA / ViT sizes.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "H": (1280, 32, 16),
}

# Every Dense kernel, the patch embedding and the mask token start as the reference's PyTorch
# `trunc_normal_(std=0.02)`, biases 0. Its cut-off is +-2 in absolute units (100 standard
# deviations), so the draw is N(0, 0.02^2) in effect; Flax's bounds are in standard deviations and
# default to +-2 of them, which would shrink the std to about 0.0176.
INIT_STD = 0.02
DENSE_INIT = nn.initializers.truncated_normal(stddev=INIT_STD, lower=-2.0 / INIT_STD, upper=2.0 / INIT_STD)
LAYER_NORM_EPS = 1e-6


# How Dense kernels start (`model.init`). "ijepa": I-JEPA's trunc-normal 0.02 with the residual
# output projections rescaled (below). "mae": MAE's reference `_init_weights`, xavier-uniform for
# every Linear and the patch embedding (fan-in p*p*C), no rescaling; the mask token stays N(0, 0.02^2)
# in both, as in both references. Biases start at 0 in both.
INIT_SCHEMES = ("ijepa", "mae")
XAVIER_INIT = nn.initializers.xavier_uniform()


def residual_output_init(layer_number: int) -> nn.initializers.Initializer:
    """DENSE_INIT divided by sqrt(2 * layer_number), for the last projection of each residual branch.

    The reference's `fix_init_weight` rescales `attn.proj` and `mlp.fc2` of block l (counting from 1)
    this way in both the encoder and the predictor, so the residual stream's variance does not grow
    with depth at initialisation.
    """
    scale = 1.0 / math.sqrt(2.0 * layer_number)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return DENSE_INIT(key, shape, dtype) * jnp.asarray(scale, dtype)

    return init


def check_init_scheme(scheme: str) -> str:
    """`scheme` if it is one of INIT_SCHEMES; a misspelt `model.init` fails here, naming the key."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"model.init must be one of {INIT_SCHEMES}, got {scheme!r}.")
    return scheme


def kernel_init(scheme: str, residual_output_of_layer: int = 0) -> nn.initializers.Initializer:
    """The Dense kernel initializer of `scheme`; pass the block number (from 1) for attn.proj / mlp.fc2."""
    if check_init_scheme(scheme) == "mae":
        return XAVIER_INIT
    return residual_output_init(residual_output_of_layer) if residual_output_of_layer else DENSE_INIT


@dataclasses.dataclass(frozen=True)
class VitShape:
    """Width, depth, heads and patch size of one encoder."""

    width: int
    depth: int
    num_heads: int
    patch_size: int


def parse_variant(variant: str, *, width: int = 0, depth: int = 0, num_heads: int = 0) -> VitShape:
    """Decodes 'S/16' into a VitShape; non-zero width/depth/num_heads override the size's values."""
    size, sep, patch = variant.partition("/")
    if size not in VIT_SIZES or not sep or not patch.isdigit():
        raise ValueError(
            f"model.variant must look like 'S/16' with a size in {sorted(VIT_SIZES)}; got {variant!r}."
        )
    base_width, base_depth, base_heads = VIT_SIZES[size]
    shape = VitShape(width or base_width, depth or base_depth, num_heads or base_heads, int(patch))
    if shape.width % shape.num_heads or shape.width % 4:
        raise ValueError(
            f"model width {shape.width} must be divisible by 4 and by the number of heads {shape.num_heads}."
        )
    return shape


def posemb_sincos_2d(grid_h: int, grid_w: int, width: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embeddings [grid_h * grid_w, width], row-major tokens.

    Follows the I-JEPA code: the first half of the channels encodes the column index, the second half
    the row index; each half is [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (width / 4)).
    """
    if width % 4:
        raise ValueError(f"Position-embedding width must be divisible by 4, got {width}.")
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")

    def embed_1d(pos: np.ndarray) -> np.ndarray:
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([embed_1d(cols), embed_1d(rows)], axis=1).astype(np.float32)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C] row-major patches (each patch row-major, bands last)."""
    batch, height, width, bands = images.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {p}.")
    grid_h, grid_w = height // p, width // p
    patches = images.reshape(batch, grid_h, p, grid_w, p, bands).transpose(0, 1, 3, 2, 4, 5)
    return patches.reshape(batch, grid_h * grid_w, p * p * bands)


def gather_tokens(tokens: jax.Array, idx: jax.Array) -> jax.Array:
    """Gathers tokens [B, N, D] at indices [B, K] (or [B, M, K]) along the token axis."""
    batch = tokens.shape[0]
    flat_idx = idx.reshape(batch, -1)
    gathered = jnp.take_along_axis(tokens, flat_idx[..., None], axis=1)
    return gathered.reshape(*idx.shape, tokens.shape[-1])


class MlpBlock(nn.Module):
    """Two-layer GELU MLP (exact GELU, as torch's default)."""

    hidden: int
    dtype: jnp.dtype = jnp.float32
    layer_number: int = 1
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=kernel_init(self.init_scheme), name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        fc2_init = kernel_init(self.init_scheme, self.layer_number)
        return nn.Dense(width, dtype=self.dtype, kernel_init=fc2_init, name="fc2")(x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (with bias)."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    layer_number: int = 1
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """x [B, L, D]; `mask` [L, L] bool, True where a query (row) may attend to a key (column)."""
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=kernel_init(self.init_scheme), name="qkv")(x)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3, self.num_heads, head_dim), 3, axis=2)
        mask = None if mask is None else mask[None, None]
        out = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], mask=mask)
        out = out.reshape(batch, length, width)
        proj_init = kernel_init(self.init_scheme, self.layer_number)
        return nn.Dense(width, dtype=self.dtype, kernel_init=proj_init, name="proj")(out)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)).

    `layer_number` (from 1) scales the initial output projections of both branches.
    """

    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32
    layer_number: int = 1
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="norm1")(x)
        attention = Attention(self.num_heads, self.dtype, self.layer_number, self.init_scheme, name="attn")
        x = x + attention(y, mask)
        y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="norm2")(x)
        mlp = MlpBlock(
            int(width * self.mlp_ratio), self.dtype, self.layer_number, self.init_scheme, name="mlp"
        )
        return x + mlp(y)


class Transformer(nn.Module):
    """`depth` pre-norm blocks and a final LayerNorm; optional rematerialisation per block.

    Activations are kept split along the batch mesh axes between blocks (a no-op without a mesh).
    """

    depth: int
    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
        x = constrain_batch(x)
        for i in range(self.depth):
            block = block_cls(
                self.num_heads, self.mlp_ratio, self.dtype, i + 1, self.init_scheme, name=f"block_{i}"
            )
            x = block(x, mask)
            x = constrain_batch(x)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="norm")(x)


class VisionTransformer(nn.Module):
    """ViT encoder for images [B, H, W, C] with any number of bands; returns tokens [B, N, D]."""

    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, images: jax.Array, keep_idx: jax.Array | None = None) -> jax.Array:
        grid_h, grid_w = images.shape[1] // self.patch_size, images.shape[2] // self.patch_size
        # A patchify + Dense is the same map as the reference's stride-p convolution.
        patches = patchify(images, self.patch_size).astype(self.dtype)
        patch_init = kernel_init(self.init_scheme)
        x = nn.Dense(self.width, dtype=self.dtype, kernel_init=patch_init, name="patch_embed")(patches)
        x = x + jnp.asarray(posemb_sincos_2d(grid_h, grid_w, self.width), self.dtype)
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx)
        return Transformer(
            self.depth,
            self.num_heads,
            self.mlp_ratio,
            dtype=self.dtype,
            remat=self.remat,
            init_scheme=self.init_scheme,
            name="blocks",
        )(x)


class Predictor(nn.Module):
    """I-JEPA's narrow predictor: predicts target-token features from the context tokens.

    Each of the M target blocks is predicted in its own sequence [context ‖ M_k mask tokens], where a
    mask token is one shared learned vector plus the sin-cos position of its target patch. With
    `out_features` = the encoder width it predicts latent tokens (REJEPA); with p*p*bands it is the
    MAE baseline's light pixel decoder (one block: the masked patches).

    `joint_targets` (a deliberate deviation, off by default) predicts all M blocks in one sequence
    [context ‖ M_1 ‖ … ‖ M_M] under a block-diagonal attention mask: context tokens attend to the
    context only, and each block's mask tokens to the context and their own block. No block sees
    another, as in the reference, but the context is processed once instead of M times (the
    reference's context tokens also attend to the one block in their sequence), which roughly halves
    the predictor's cost for 4 blocks.
    """

    grid: tuple[int, int]
    out_features: int
    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    joint_targets: bool = False
    init_scheme: str = "ijepa"

    @nn.compact
    def __call__(self, context: jax.Array, context_idx: jax.Array, target_idx: jax.Array) -> jax.Array:
        """context [B, Kc, D], context_idx [B, Kc], target_idx [B, M, Kt] -> [B, M, Kt, out_features]."""
        batch, num_context, _ = context.shape
        _, num_targets, num_target_tokens = target_idx.shape
        posemb = jnp.asarray(posemb_sincos_2d(*self.grid, self.width), self.dtype)[None]
        posemb = jnp.broadcast_to(posemb, (batch, *posemb.shape[1:]))

        x = nn.Dense(self.width, dtype=self.dtype, kernel_init=kernel_init(self.init_scheme), name="embed")(
            context
        )
        x = x + gather_tokens(posemb, context_idx)
        mask_token = self.param("mask_token", DENSE_INIT, (1, 1, 1, self.width))
        queries = mask_token.astype(self.dtype) + gather_tokens(posemb, target_idx)

        transformer = Transformer(
            self.depth,
            self.num_heads,
            self.mlp_ratio,
            dtype=self.dtype,
            remat=self.remat,
            init_scheme=self.init_scheme,
            name="blocks",
        )
        if self.joint_targets:
            x = jnp.concatenate([x, queries.reshape(batch, num_targets * num_target_tokens, self.width)], 1)
            x = transformer(x, block_diagonal_mask(num_context, num_targets, num_target_tokens))
        else:
            x = jnp.broadcast_to(x[:, None], (batch, num_targets, num_context, self.width))
            x = jnp.concatenate([x, queries], axis=2)
            x = transformer(x.reshape(batch * num_targets, num_context + num_target_tokens, self.width))
        x = x[:, num_context:]
        out_init = kernel_init(self.init_scheme)
        x = nn.Dense(self.out_features, dtype=self.dtype, kernel_init=out_init, name="proj")(x)
        return x.reshape(batch, num_targets, num_target_tokens, self.out_features)


def block_diagonal_mask(num_context: int, num_blocks: int, block_size: int) -> jax.Array:
    """[L, L] attention mask of the joint predictor sequence [context ‖ block_1 ‖ … ‖ block_M].

    Context rows see the context; rows of block m see the context and block m.
    """
    segment = np.concatenate(
        [np.zeros(num_context, np.int32), np.repeat(np.arange(1, num_blocks + 1), block_size)]
    )
    is_context_key = segment[None, :] == 0
    same_block = segment[:, None] == segment[None, :]
    return jnp.asarray(is_context_key | same_block)
