"""What a run derives from its config before any array exists: modules, state shapes, shardings.

Training, the cost report and the checkpoint readers all build it here, so the fingerprint a reader
checks is computed exactly as the one training saved.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

from rejepa_jax import checkpoint, config_lib, optim, sharding
from rejepa_jax import state as state_lib
from rejepa_jax.data import pipeline
from rejepa_jax.masking import MaskSampler, make_mask_sampler
from rejepa_jax.models import factory


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Everything derived from the config before any array exists: modules, shapes, shardings."""

    mesh: jax.sharding.Mesh
    encoder: nn.Module
    predictor: nn.Module
    expander: nn.Module | None
    sampler: MaskSampler
    optimizer: optax.GradientTransformation
    batch: dict[str, jax.ShapeDtypeStruct]
    init_fn: Callable[[jax.Array], state_lib.TrainState]
    abstract_state: Any  # ShapeDtypeStructs carrying the target shardings.
    state_sharding: Any
    fingerprint: dict[str, Any]


def build_run(config: ml_collections.ConfigDict) -> RunSetup:
    """Mesh, models, masks and optimizer; then the state's shapes (jax.eval_shape) and shardings."""
    config_lib.validate(config)
    mesh = sharding.make_mesh(config.mesh)
    encoder, predictor = factory.build_encoder(config), factory.build_predictor(config)
    expander = factory.build_expander(config)
    sampler = make_mask_sampler(config.masks, factory.patch_grid(config))
    optimizer = optim.make_optimizer(config.optimizer, config.total_steps)
    batch = state_lib.batch_shapes(
        config.batch_size,
        config.data.image_size,
        config.data.channels,
        sampler.shapes,
        **pipeline.view_counts(config),
    )
    init_fn = functools.partial(
        state_lib.init_train_state,
        encoder=encoder,
        predictor=predictor,
        optimizer=optimizer,
        batch=batch,
        expander=expander,
    )
    shapes = jax.eval_shape(init_fn, jax.random.key(config.seed))
    state_sharding = sharding.state_shardings(shapes, mesh, config.sharding)
    abstract_state = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), shapes, state_sharding
    )
    return RunSetup(
        mesh=mesh,
        encoder=encoder,
        predictor=predictor,
        expander=expander,
        sampler=sampler,
        optimizer=optimizer,
        batch=batch,
        init_fn=init_fn,
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        fingerprint=checkpoint.compatibility_fingerprint(config, shapes),
    )
