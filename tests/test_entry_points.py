"""The command-line modules and small helpers that the end-to-end tests reach only in subprocesses.

Each command defines its absl flags when imported, several under the same names (--workdir, --out,
--set), so two commands cannot live in one process: the `command` fixture imports one and removes its
flags (and the SIGTERM handler rejepa_jax.main installs) again afterwards.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import app, flags
from helpers import tiny_demo

import rejepa_jax
from rejepa_jax import cli, distributed, preemption
from rejepa_jax.retrieval import encoder_bundle

COMMANDS = [
    "rejepa_jax.main",
    "rejepa_jax.export",
    "rejepa_jax.search",
    "rejepa_jax.evaluate",
    "rejepa_jax.prepare",
]


def _flag_names(module_name: str) -> set[str]:
    """The flags a module defines (`flags.DEFINE_*("name", ...)`), read from its source."""
    tree = ast.parse(Path(importlib.util.find_spec(module_name).origin).read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "").startswith("DEFINE")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


@pytest.fixture
def command(request):
    """The command module named by the test's parameter, imported for this test only.

    Flags of the same name that modules imported earlier defined (rejepa_jax.stats: --config) are set
    aside meanwhile and put back afterwards.
    """
    name = request.param
    assert name not in sys.modules, f"{name} is already imported: its flags would clash"
    stashed = {
        flag: (flags.FLAGS[flag], flags.FLAGS.find_module_defining_flag(flag))
        for flag in _flag_names(name)
        if flag in flags.FLAGS
    }
    for flag in stashed:
        delattr(flags.FLAGS, flag)
    flags_before, sigterm_before = set(flags.FLAGS), signal.getsignal(signal.SIGTERM)
    try:
        yield importlib.import_module(name)
    finally:
        for flag in set(flags.FLAGS) - flags_before:
            delattr(flags.FLAGS, flag)
        for flag, (holder, module_name) in stashed.items():
            flags.FLAGS[flag] = holder
            flags.FLAGS.register_flag_by_module(module_name, holder)
        if name == "rejepa_jax.main":
            preemption.uninstall(sigterm_before)
        sys.modules.pop(name, None)
        if hasattr(rejepa_jax, name.rpartition(".")[2]):
            delattr(rejepa_jax, name.rpartition(".")[2])


@pytest.mark.parametrize("command", COMMANDS, indirect=True)
def test_every_command_refuses_positional_arguments(command):
    with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['stray'\]"):
        command.main(["prog", "stray"])


@pytest.mark.parametrize("command", ["rejepa_jax.main"], indirect=True)
def test_train_command_names_the_closest_key_of_a_misspelt_override(command, monkeypatch):
    assert signal.getsignal(signal.SIGTERM) is preemption._on_sigterm  # Installed at import.
    monkeypatch.setattr(sys, "argv", ["rejepa-train", "--config=configs/demo.py", "--config.model.widht=64"])
    with pytest.raises(SystemExit, match=r"error: Unknown config key 'model\.widht'.*'model\.width'"):
        command.run()


@pytest.mark.parametrize("command", ["rejepa_jax.prepare"], indirect=True)
def test_prepare_parses_split_flags(command):
    assert command.parse_splits([]) is None
    assert command.parse_splits(["train=a.csv, b.csv", "test=c.csv"]) == {
        "train": ("a.csv", "b.csv"),
        "test": ("c.csv",),
    }
    for bad in (["train"], ["=a.csv"], ["train="]):
        with pytest.raises(app.UsageError, match="expected NAME=CSV"):
            command.parse_splits(bad)
    with pytest.raises(app.UsageError, match="given twice"):
        command.parse_splits(["train=a.csv", "train=b.csv"])


def test_clusters_are_detected_from_slurm_and_tpu_variables(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert not distributed.cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "one-host")
    assert not distributed.cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "worker-0,worker-1")
    assert distributed.cluster_detected()


def test_library_info_is_dropped_once_and_warnings_and_own_info_are_kept():
    cli.quiet_library_info()
    cli.quiet_library_info()
    handler = cli.logging.get_absl_handler()
    quiet = [f for f in handler.filters if isinstance(f, cli._QuietLibraryInfo)]
    assert len(quiet) == 1

    def record(path: str, level: int) -> logging.LogRecord:
        return logging.LogRecord("name", level, path, 1, "message", None, None)

    assert not quiet[0].filter(record("/site-packages/orbax/checkpoint/x.py", logging.INFO))
    assert quiet[0].filter(record("/site-packages/orbax/checkpoint/x.py", logging.WARNING))
    assert quiet[0].filter(record("/repo/rejepa_jax/trainer.py", logging.INFO))


def test_encoder_bundle_fingerprints_saves_and_refuses_a_mismatched_model(tmp_path):
    params = {"encoder": {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}}
    changed = {"encoder": {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3) + 1}}}
    assert encoder_bundle.fingerprint(params) == encoder_bundle.fingerprint(params)
    assert encoder_bundle.fingerprint(params) != encoder_bundle.fingerprint(changed)

    path = tmp_path / "encoder.npz"
    assert encoder_bundle.save(path, params) == encoder_bundle.fingerprint(params)
    with np.load(path, allow_pickle=False) as stored:
        assert list(stored.files) == ["encoder/dense/kernel"]
        np.testing.assert_array_equal(stored["encoder/dense/kernel"], params["encoder"]["dense"]["kernel"])
    with pytest.raises(ValueError, match="lacks the encoder parameter .*model mismatch"):
        encoder_bundle.load(path, tiny_demo())
