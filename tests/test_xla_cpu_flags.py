"""The XLA CPU defaults: added only where measured, never over the user's choice, and effective."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

from rejepa_jax import xla_cpu_flags

FLAG = xla_cpu_flags.YNN_FUSION_FLAG


def test_the_flag_is_appended_to_the_users_flags_on_a_measured_jaxlib():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_cpu_flags.add_cpu_defaults(environ, "0.10.2")
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {FLAG}"
    assert not xla_cpu_flags.add_cpu_defaults(environ, "0.10.2")  # Already there: not twice.
    assert environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


@pytest.mark.parametrize(
    "environ, version",
    [
        ({}, "0.11.0"),  # Not measured there: an unknown flag would abort the process.
        ({}, ""),  # No jaxlib metadata.
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, "0.10.2"),  # The user chose.
        ({"REJEPA_XLA_CPU_DEFAULTS": "0"}, "0.10.2"),  # Turned off.
    ],
)
def test_the_flag_is_left_out(environ, version):
    before = dict(environ)
    assert not xla_cpu_flags.add_cpu_defaults(environ, version)
    assert environ == before


_PROGRAM = """
import os
os.environ.pop("XLA_FLAGS", None)
import jax, jax.numpy as jnp
import rejepa_jax
from rejepa_jax.models.vit import LAYER_NORM_EPS
import flax.linen as nn

def block(x, w):
    params = {"scale": jnp.ones(192), "bias": jnp.zeros(192)}
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS).apply({"params": params}, x) @ w

# The shapes of a ViT-Ti block at batch 64 (smaller products are not handed to YNNPACK at all).
hlo = jax.jit(block).lower(jnp.ones((4096, 192)), jnp.ones((192, 768))).compile().as_text()
fused = [c for c in hlo.split("\\n\\n") if "dot(" in c and "reduce(" in c]
print(os.environ.get("XLA_FLAGS", ""), "|", len(fused))
"""


@pytest.mark.slow  # A fresh process: XLA reads its flags once, at the first computation.
@pytest.mark.parametrize("opt_out", ["1", "0"])
def test_importing_the_package_keeps_layer_norm_out_of_the_matmul_fusion(opt_out):
    env = {"REJEPA_XLA_CPU_DEFAULTS": opt_out, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    flags, fused = result.stdout.strip().rsplit("|", 1)
    if not xla_cpu_flags.jaxlib_version().startswith(xla_cpu_flags.MEASURED_JAXLIB_VERSIONS):
        assert FLAG not in flags
        return
    if opt_out == "1":
        assert FLAG in flags
        assert int(fused) == 0  # No computation holds both the LayerNorm's reduce and the product.
    else:
        assert FLAG not in flags
        assert int(fused) >= 1  # XLA's own default fuses them: the check above can fail.
