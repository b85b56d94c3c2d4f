"""Device mesh and sharding rules from the config; host batches to global arrays.

Mesh axes are `data`, `fsdp` and `tensor` (sizes from `config.mesh`, -1 meaning "every remaining
device"). Batches and activations are split along `data` x `fsdp`. The train state (params, EMA
target, optimizer state) follows `config.sharding.rules`: the first regex that matches a leaf's path
(for example `params/context_encoder/blocks/block_0/attn/qkv/kernel` or `opt_state/.../mu/...`) decides:

- `fsdp`: split the largest dimension that the `fsdp` axis size divides (leaves smaller than
  `config.sharding.min_size` elements stay replicated); XLA gathers each weight just before use;
- `replicate`: a full copy on every device;
- an explicit per-dimension spec such as `fsdp,tensor` or `-,tensor` (`-` leaves a dimension whole).

The EMA target and the Adam moments have the encoder's paths, so they are sharded like it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Axis sizes on `num_devices` devices; at most one axis may be -1, meaning all remaining."""
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
    if math.prod(sizes) > num_devices:
        raise ValueError(f"mesh {named} needs {math.prod(sizes)} devices but {num_devices} are present.")
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """A mesh with Auto axes (so sharding constraints propagate).

    It spans every device unless the sizes ask for fewer (e.g. `data=1,fsdp=1` runs on one device
    of many), in which case the first devices of each process are used.
    """
    shape = mesh_shape(mesh_config, jax.device_count())
    devices = None
    if math.prod(shape) < jax.device_count():
        if jax.process_count() > 1:
            raise ValueError(f"On {jax.process_count()} processes the mesh must span every device.")
        devices = jax.devices()[: math.prod(shape)]
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over `data` x `fsdp`."""
    return NamedSharding(mesh, P(BATCH_AXES))


def batch_divisor(mesh: jax.sharding.Mesh) -> int:
    """A global batch must be a multiple of this (the number of batch shards)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def constrain_batch(x: jax.Array) -> jax.Array:
    """Keeps activations split along the batch axes when a mesh with them is active (else a no-op).

    Without it XLA may choose to split a weight-sharded matmul along the weight instead of
    gathering the weight, which turns FSDP into an accidental tensor parallelism.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x
    if x.shape[0] % math.prod(mesh.shape[a] for a in BATCH_AXES):
        return x
    return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def leaf_path(path: Sequence[Any]) -> str:
    """'params/context_encoder/blocks/block_0/attn/qkv/kernel' for a tree path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def leaf_spec(name: str, shape: tuple[int, ...], rule: str, mesh: jax.sharding.Mesh, min_size: int) -> P:
    """The PartitionSpec that `rule` gives a leaf of `shape` on `mesh`."""
    if rule == "replicate" or not shape:
        return P()
    if rule == "fsdp":
        axis = mesh.shape["fsdp"]
        if axis == 1 or math.prod(shape) < min_size:
            return P()
        candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % axis == 0]
        if not candidates:
            return P()
        spec = [None] * len(shape)
        spec[int(candidates[0])] = "fsdp"
        return P(*spec)
    dims = [d.strip() for d in rule.split(",")]
    if len(dims) != len(shape):
        raise ValueError(f"Sharding rule {rule!r} has {len(dims)} dims but {name} has shape {shape}.")
    spec = []
    for dim, size in zip(dims, shape, strict=True):
        if dim in ("-", "None", ""):
            spec.append(None)
        elif dim not in MESH_AXES:
            raise ValueError(f"Sharding rule {rule!r} for {name}: unknown mesh axis {dim!r}.")
        elif size % mesh.shape[dim]:
            raise ValueError(f"Sharding rule {rule!r}: {name} dim of size {size} is not divisible by {dim}.")
        else:
            spec.append(dim)
    return P(*spec)


def state_shardings(
    abstract_state: Any, mesh: jax.sharding.Mesh, sharding_config: ml_collections.ConfigDict
) -> Any:
    """NamedSharding of every train-state leaf, by the first matching rule (replicated if none)."""
    rules = [(re.compile(pattern), rule) for pattern, rule in sharding_config.rules]

    def shard(path, leaf):
        name = leaf_path(path)
        rule = next((r for pattern, r in rules if pattern.fullmatch(name)), "replicate")
        return NamedSharding(mesh, leaf_spec(name, tuple(leaf.shape), rule, mesh, sharding_config.min_size))

    return jax.tree_util.tree_map_with_path(shard, abstract_state)


def global_batch(host_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Turns this host's slice of a batch into global arrays sharded along the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}
