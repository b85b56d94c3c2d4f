"""Test-wide settings: CPU only, eight fake devices so sharded meshes run in every test session.

Tests that want one device ask for it with a `data=1` mesh.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # The environment above must be set before JAX reads it.

jax.config.update("jax_num_cpu_devices", 8)
