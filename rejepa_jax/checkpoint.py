"""Orbax checkpoints of the train state, the data-iterator state and a compatibility fingerprint.

Each checkpoint step holds three items:
- `state`: the TrainState pytree, restored straight into the target shardings;
- `data_iter`: the grain iterator state, so a resumed run sees exactly the batches it would have;
- `meta`: JSON with the model config and the state's leaf shapes, checked before restoring so that a
  workdir trained with another model gets a clear error instead of a shape mismatch deep in Orbax.

Orbax writes each step to a temporary folder and renames it into place, so a killed save never
replaces a completed checkpoint. A latest step that cannot be read (truncated or corrupt files) is
reported, renamed to `<step>.unreadable` (kept, never deleted) and the previous step is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written by a config whose state does not fit this one."""


class NoUsableCheckpointError(RuntimeError):
    """Every checkpoint step in the workdir failed to restore."""


def compatibility_fingerprint(config: ml_collections.ConfigDict, abstract_state: Any) -> dict[str, Any]:
    """What must match for a checkpoint to restore: the model config, band count and leaf shapes."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    return {
        "model": config.model.to_dict(),
        "data.channels": config.data.channels,
        "state_shapes": {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in leaves},
    }


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when compatible)."""
    diffs = []
    for key, value in saved.get("model", {}).items():
        now = current["model"].get(key)
        if now != value and not (isinstance(now, list | tuple) and list(now) == value):
            diffs.append(f"model.{key}: checkpoint {value!r}, config {now!r}")
    if saved.get("data.channels") != current["data.channels"]:
        diffs.append(
            f"data.channels: checkpoint {saved.get('data.channels')}, config {current['data.channels']}"
        )
    if not diffs and saved.get("state_shapes") != current["state_shapes"]:
        saved_shapes, now_shapes = saved.get("state_shapes", {}), current["state_shapes"]
        changed = sorted(set(saved_shapes.items()) ^ set(now_shapes.items()), key=str)
        diffs.append(f"state leaves differ, e.g. {[k for k, _ in changed[:3]]}")
    return diffs


class Checkpointer:
    """Saves every `every_steps` steps and on demand, keeps the newest `keep`, restores the newest good."""

    def __init__(self, directory: str | Path, *, every_steps: int, keep: int, async_save: bool):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(every_steps, 1)),
            preservation_policy=ocp.checkpoint_managers.LatestN(max(keep, 1)),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data_iter", "meta"), options=options
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: grain.DatasetIterator,
        fingerprint: dict[str, Any],
        *,
        force: bool = False,
    ) -> bool:
        """Saves (asynchronously) if the interval policy says so or `force`; returns whether it saved."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=grain.checkpoint.CheckpointSave(data_iterator),
                meta=ocp.args.JsonSave(fingerprint),
            ),
            force=force,
        )

    def restore_latest(
        self,
        abstract_state: Any,
        data_iterator: grain.DatasetIterator | None,
        fingerprint: dict[str, Any],
        *,
        step: int | None = None,
    ) -> tuple[int, Any] | None:
        """Restores the newest readable step into `abstract_state`'s shardings; None if there is none.

        `abstract_state` is a pytree of jax.ShapeDtypeStruct carrying the target shardings. The data
        iterator, when given, is set to the state it had at that step. With `step`, only that step
        is tried (an error lists the available ones).
        """
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"No checkpoint step {step} in {self.directory}; available: {steps}.")
            steps = [step]
        for i, step in enumerate(reversed(steps)):
            self._check_compatible(step, fingerprint)
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # Orbax raises many types for damaged files.
                remaining = len(steps) - i - 1
                kept = self._set_aside(step)
                logging.error(
                    "Checkpoint step %d in %s cannot be restored (%s: %s); moved to %s; %s",
                    step,
                    self.directory,
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                    kept,
                    "trying the previous step." if remaining else "no older step is left.",
                )
                continue
            return step, restored.state
        if steps:
            raise NoUsableCheckpointError(
                f"None of the checkpoint steps {steps} in {self.directory} could be restored; "
                "see the errors above. Move the folder away to start from scratch."
            )
        return None

    def _set_aside(self, step: int) -> Path:
        """Renames an unreadable step out of Orbax's view (kept for inspection, never deleted)."""
        target = self.directory / f"{step}.unreadable"
        if jax.process_index() == 0:
            suffix = 0
            while target.exists():
                suffix += 1
                target = self.directory / f"{step}.unreadable-{suffix}"
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:  # Every host must see the rename before reloading.
            multihost_utils.sync_global_devices(f"set_aside_checkpoint_{step}")
        self._manager.reload()
        return target

    def _check_compatible(self, step: int, fingerprint: dict[str, Any]) -> None:
        meta_file = self.directory / str(step) / "meta" / "metadata"
        try:
            saved = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            return  # Unreadable metadata: the state restore decides (and reports) below.
        diffs = fingerprint_differences(saved, fingerprint)
        if diffs:
            raise IncompatibleCheckpointError(
                f"The workdir checkpoint {self.directory / str(step)} comes from an incompatible config: "
                + "; ".join(diffs)
                + ". Use another --workdir, or the config it was trained with."
            )

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
