"""The encoder that made an index, saved beside it so queries are embedded by the same model.

Params are stored flat in an `.npz` (one array per leaf path, loaded with allow_pickle=False) and
identified by a fingerprint: the SHA-256 of every leaf's path, dtype, shape and bytes. The manifest
records the fingerprint; a query encoder whose fingerprint differs is a model mismatch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from rejepa_jax.models import factory
from rejepa_jax.sharding import leaf_path


def flatten(params: Any) -> dict[str, np.ndarray]:
    """{'encoder/block_0/attn/qkv/kernel': array, ...} on the host."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {leaf_path(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def fingerprint(params: Any) -> str:
    """SHA-256 over the sorted leaves' paths, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, array in sorted(flatten(params).items()):
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save(path: str | Path, params: Any) -> str:
    """Writes the params to `path` (.npz) and returns their fingerprint."""
    np.savez(path, **flatten(params))
    return fingerprint(params)


def load(path: str | Path, config: ml_collections.ConfigDict) -> Any:
    """Params for `config`'s encoder from `path`, checked leaf by leaf against the model's shapes."""
    encoder = factory.build_encoder(config)
    size = config.data.image_size
    image = jax.ShapeDtypeStruct((1, size, size, config.data.channels), "float32")
    abstract = jax.eval_shape(lambda x: encoder.init(jax.random.key(0), x)["params"], image)
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    values = []
    for key_path, leaf in leaves:
        name = leaf_path(key_path)
        if name not in arrays:
            raise ValueError(f"{path} lacks the encoder parameter {name!r}: model mismatch with the config.")
        if arrays[name].shape != leaf.shape:
            raise ValueError(
                f"{path}: parameter {name!r} has shape {arrays[name].shape}, the config's model needs "
                f"{leaf.shape} (model mismatch)."
            )
        values.append(arrays[name])
    extra = set(arrays) - {leaf_path(p) for p, _ in leaves}
    if extra:
        raise ValueError(f"{path} has parameters the config's model lacks, e.g. {sorted(extra)[:3]}.")
    return jax.tree_util.tree_unflatten(treedef, values)
