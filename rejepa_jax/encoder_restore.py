"""Read-only restore of a training run's parameters, for export, search and evaluation.

Readers open the checkpoint folder read-only (a live run may be writing to it) and check the
config's fingerprint against the saved one, exactly as training does; they never import the trainer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections

from rejepa_jax import checkpoint
from rejepa_jax import state as state_lib
from rejepa_jax.run_setup import RunSetup, build_run


@dataclasses.dataclass(frozen=True)
class RestoredEncoder:
    """One encoder of a checkpoint, with the run setup (modules, mesh) built to restore it."""

    step: int
    params: Any
    run: RunSetup


def restore_state(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    step: int | None = None,
    run: RunSetup | None = None,
) -> tuple[int, state_lib.TrainState]:
    """(step, TrainState) of a checkpoint (newest good one by default), changing nothing on disk.

    The arrays land in the shardings `config.mesh` gives on the devices present. Nothing in the
    checkpoint folder is created, renamed or deleted, and a damaged step is reported and skipped
    (with `step`: an error), not set aside.
    """
    run = run or build_run(config)
    checkpointer = checkpoint.Checkpointer(Path(workdir) / "checkpoints", read_only=True)
    try:
        restored = checkpointer.restore_latest(run.abstract_state, None, run.fingerprint, step=step)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {checkpointer.directory}.")
    return restored


def restore_params(
    config: ml_collections.ConfigDict, workdir: str | Path, *, step: int | None = None
) -> tuple[int, dict[str, Any]]:
    """(step, {context_encoder, predictor[, expander], target_encoder}) of a checkpoint, read-only."""
    restored_step, state = restore_state(config, workdir, step=step)
    return restored_step, {**state.params, "target_encoder": state.target_encoder}


def restore_encoder(
    config: ml_collections.ConfigDict, workdir: str | Path, which: str, *, step: int | None = None
) -> RestoredEncoder:
    """The 'target' or 'context' encoder of a checkpoint, read-only, with the run setup built once."""
    run = build_run(config)
    restored_step, state = restore_state(config, workdir, step=step, run=run)
    return RestoredEncoder(step=restored_step, params=state_lib.encoder_params(state, which), run=run)
