"""Test-wide settings: CPU only, eight fake devices so sharded meshes run in every test session.

Tests that want one device ask for it with a `data=1` mesh.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # The environment above must be set before JAX reads it.

jax.config.update("jax_num_cpu_devices", 8)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A 2-step tiny demo run (checkpoint, config.json) shared by the export and evaluation tests."""
    from helpers import tiny_demo

    from rejepa_jax import trainer

    workdir = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(tiny_demo(total_steps=2), workdir)
    return workdir


@pytest.fixture(scope="session")
def index_dir(trained, tmp_path_factory):
    """The archive of the embedded sample exported from `trained` (brute-force ScaNN index)."""
    from rejepa_jax import config_lib
    from rejepa_jax.retrieval.exporter import ExportOptions, export_index

    out = tmp_path_factory.mktemp("indexes") / "sample"
    export_index(config_lib.load_json(trained / "config.json"), trained, out, ExportOptions(encoder="target"))
    return out
