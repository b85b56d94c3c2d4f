"""Device mesh from the config, and the shardings of the train state and of input batches.

The batch dimension is split over every mesh axis (`data` x `fsdp`); host batches become global
arrays with `jax.make_array_from_process_local_data`, which is correct on one host and on many.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Axis sizes for `num_devices`; at most one axis may be -1, meaning every remaining device."""
    sizes = [int(mesh_config[name]) for name in MESH_AXES]
    named = dict(zip(MESH_AXES, sizes, strict=True))
    unknown = [i for i, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {named}: use positive sizes and at most one -1.")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split into mesh {named}.")
        sizes[unknown[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {named} needs {math.prod(sizes)} devices but {num_devices} are present.")
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """A mesh over all devices with Auto axes (so sharding constraints and rules propagate)."""
    shape = mesh_shape(mesh_config, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every mesh axis."""
    return NamedSharding(mesh, P(BATCH_AXES))


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
    """Sharding of every leaf of the train state (replicated on this mesh)."""
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def global_batch(host_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Turns this host's slice of a batch into global arrays sharded along the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}
