"""Mesh sizes and the train-state sharding rules, on eight fake CPU devices."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rejepa_jax import sharding


def _mesh_config(data=-1, fsdp=1, tensor=1):
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def _rules(*rules, min_size=16):
    return ml_collections.ConfigDict({"rules": tuple(rules), "min_size": min_size})


def test_mesh_shape_fills_the_unknown_axis_and_checks_counts():
    assert sharding.mesh_shape(_mesh_config(-1, 1), 8) == (8, 1, 1)
    assert sharding.mesh_shape(_mesh_config(2, -1), 8) == (2, 4, 1)
    assert sharding.mesh_shape(_mesh_config(1, 1), 8) == (1, 1, 1)  # One device of eight.
    with pytest.raises(ValueError, match="cannot be split"):
        sharding.mesh_shape(_mesh_config(3, -1), 8)
    with pytest.raises(ValueError, match="at most one -1"):
        sharding.mesh_shape(_mesh_config(-1, -1), 8)
    with pytest.raises(ValueError, match="needs 16 devices"):
        sharding.mesh_shape(_mesh_config(4, 4), 8)


def test_make_mesh_uses_auto_axes_and_a_subset_when_asked():
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(_mesh_config(2, 4))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert sharding.make_mesh(_mesh_config(1, 1)).size == 1
    assert sharding.batch_divisor(mesh) == 8


def test_fsdp_rule_splits_the_largest_divisible_dimension():
    mesh = sharding.make_mesh(_mesh_config(2, 4))
    assert sharding.leaf_spec("w", (192, 576), "fsdp", mesh, 16) == P(None, "fsdp")
    assert sharding.leaf_spec("w", (576, 10), "fsdp", mesh, 16) == P("fsdp", None)
    assert sharding.leaf_spec("w", (6, 10), "fsdp", mesh, 16) == P()  # Nothing divisible by 4.
    assert sharding.leaf_spec("b", (64,), "fsdp", mesh, 1024) == P()  # Below min_size.
    assert sharding.leaf_spec("w", (64, 64), "replicate", mesh, 16) == P()
    assert sharding.leaf_spec("w", (64, 64), "-,fsdp", mesh, 16) == P(None, "fsdp")
    with pytest.raises(ValueError, match="unknown mesh axis"):
        sharding.leaf_spec("w", (64, 64), "-,model", mesh, 16)
    with pytest.raises(ValueError, match="has 3 dims"):
        sharding.leaf_spec("w", (64, 64), "fsdp,-,-", mesh, 16)


def test_state_rules_match_paths_in_order():
    mesh = sharding.make_mesh(_mesh_config(2, 4))
    state = {
        "params": {"context_encoder": {"qkv": {"kernel": jax.ShapeDtypeStruct((64, 192), "float32")}}},
        "target_encoder": {"qkv": {"kernel": jax.ShapeDtypeStruct((64, 192), "float32")}},
        "step": jax.ShapeDtypeStruct((), "int32"),
    }
    shardings = sharding.state_shardings(state, mesh, _rules((".*target.*", "replicate"), (".*", "fsdp")))
    assert shardings["params"]["context_encoder"]["qkv"]["kernel"].spec == P(None, "fsdp")
    assert shardings["target_encoder"]["qkv"]["kernel"].spec == P()
    assert shardings["step"].spec == P()


def test_global_batch_splits_along_data_and_fsdp():
    mesh = sharding.make_mesh(_mesh_config(2, 4))
    batch = sharding.global_batch({"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}, mesh)
    assert batch["x"].shape == (16, 3)
    assert {s.data.shape for s in batch["x"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(48).reshape(16, 3))
