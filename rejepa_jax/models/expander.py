"""VICReg's expander: the head that the variance, covariance and invariance terms act on.

VICReg (Bardes et al., ICLR 2022) regularises the output of an MLP on top of the backbone, not the
backbone's features: Linear -> BatchNorm -> ReLU per hidden layer, then a Linear. The
terms shape the expander's wide space while the pooled encoder output, the retrieval descriptor,
stays free of the hinge on every dimension. The expander exists only for training; it is never
used to embed images.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default, as VICReg uses.


class BatchStatNorm(nn.Module):
    """BatchNorm that always normalises with the statistics of the batch it is given.

    The expander runs only inside the train step, so no running averages are kept: the state stays
    one pure pytree. Statistics are over axis 0 (examples); any axes between it and the features
    (views) get statistics of their own, as VICReg's expander sees each view's batch separately.
    Under `jax.jit` over a mesh the mean is that of the global batch.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        mean = x.mean(axis=0, keepdims=True)
        var = jnp.square(x - mean).mean(axis=0, keepdims=True)  # Biased, as BatchNorm normalises.
        return (x - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) * scale + bias


class Expander(nn.Module):
    """[N, ..., D] -> [N, ..., widths[-1]]: (Linear, BatchNorm, ReLU) per hidden width, then Linear.

    Linear layers carry no bias: a BatchNorm follows each hidden one, and the output one has none in
    VICReg either.
    """

    widths: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        for i, width in enumerate(self.widths[:-1]):
            # No bias: the BatchNorm right after removes any constant (its gradient would be noise).
            x = nn.Dense(width, use_bias=False, name=f"dense_{i}")(x)
            x = nn.relu(BatchStatNorm(name=f"norm_{i}")(x))
        return nn.Dense(self.widths[-1], use_bias=False, name="out")(x)
