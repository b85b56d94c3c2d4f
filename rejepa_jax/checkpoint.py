"""Orbax checkpoints of the train state, the data-iterator state and a compatibility fingerprint.

Each checkpoint step holds three items:
- `state`: the TrainState pytree, restored straight into the target shardings;
- `data_iter`: the grain iterator state, so a resumed run sees exactly the batches it would have;
- `meta`: JSON with the model config and the state's leaf shapes, checked before restoring so that a
  workdir trained with another model gets a clear error instead of a shape mismatch deep in Orbax.

Orbax writes each step to a temporary folder and renames it into place, so a killed save never
replaces a completed checkpoint.

A step that fails to restore is set aside only when its files are proven damaged
(`damage_evidence`): missing files, or a decoding error of Orbax/TensorStore on them. Then the
trainer (never a read-only reader) renames it to `<step>.unreadable` (kept, never deleted) and uses
the previous step. Any other error (permissions, I/O, memory, a data-iterator state that no longer
fits the data pipeline) stops with `CheckpointRestoreError`, its cause attached, and leaves the step
as it is. Readers (export, search, evaluation) open the folder read-only: no clean-up of temporary
folders, no retention, no renames.
"""

from __future__ import annotations

import json
import logging as python_logging
import re
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

# Names a set-aside step gets: `<step>.unreadable`, then `<step>.unreadable-1`, ...
SET_ASIDE_PATTERN = re.compile(r"^\d+\.unreadable(-\d+)?$")

# TensorStore raises ValueError("<STATUS_CODE>: <message>"). These codes, without an OS error code
# in the message, come from reading the step's own bytes: DATA_LOSS (a manifest or b-tree node that
# does not decode, a checksum mismatch), OUT_OF_RANGE ("Requested byte range ... is not valid for
# value of size ...": a truncated file), NOT_FOUND (a file of the step is missing).
_DAMAGE_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND")
# FAILED_PRECONDITION is also what TensorStore reports for a chunk that does not decompress (a
# truncated or missing data file: "Truncated Zstd-compressed stream"), but it is the status of some
# OS errors too (EBUSY, EBADF), so only its decoding messages count.
_DECODING_TEXT = re.compile(r"truncated|decod|decompress|corrupt|checksum|crc32c", re.IGNORECASE)
_STATUS = re.compile(r"^([A-Z_]+): ")
# TensorStore appends [os_error_code='13'] to errors of the operating system (EACCES, EIO, ENOSPC):
# those are not evidence about the files' contents.
_OS_ERROR = re.compile(r"os_error_code")

_OK, _DAMAGED, _FAILED = 0, 1, 2


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written by a config whose state does not fit this one."""


class NoUsableCheckpointError(RuntimeError):
    """No checkpoint step of the workdir can be restored (or only set-aside ones are left)."""


class CheckpointRestoreError(RuntimeError):
    """A checkpoint step failed to restore for a reason other than damaged files (see __cause__)."""


class DamagedCheckpointError(RuntimeError):
    """A checkpoint step's files are missing or do not decode."""


def damage_evidence(error: BaseException) -> str | None:
    """Why `error` proves the step's files damaged, or None when it does not.

    Follows the chain of causes; the first exception that says something decides. Damage: a
    `DamagedCheckpointError` (files missing), a JSON or UTF-8 decoding error of the step's metadata
    or data-iterator files, a TensorStore DATA_LOSS / OUT_OF_RANGE / NOT_FOUND, or a
    FAILED_PRECONDITION about decoding. Not damage: any OSError or MemoryError, any TensorStore
    error carrying an OS error code, any other status (PERMISSION_DENIED, UNKNOWN, UNAVAILABLE,
    RESOURCE_EXHAUSTED, ...) and everything else (e.g. the KeyError or TypeError of a grain
    iterator state that does not fit the pipeline).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DamagedCheckpointError):
            return str(current)
        if isinstance(current, OSError | MemoryError):
            return None
        if isinstance(current, json.JSONDecodeError | UnicodeDecodeError):
            return f"{type(current).__name__}: {current}"
        if isinstance(current, ValueError):
            message = str(current)
            status = _STATUS.match(message)
            if status:
                if _OS_ERROR.search(message):
                    return None
                code = status.group(1)
                if code in _DAMAGE_CODES or (
                    code == "FAILED_PRECONDITION" and _DECODING_TEXT.search(message)
                ):
                    return message.split(" [tensorstore_spec")[0]
                return None
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


# The train state's parameter naming. 1: params/encoder/encoder/block_* and `target_params`;
# 2: params/context_encoder/blocks/block_* and `target_encoder`. Bumped whenever a path is renamed.
PARAM_LAYOUT = 2
_PARAM_LAYOUT_NAMES = {
    1: "params/encoder/encoder/block_*, target_params",
    2: "params/context_encoder/blocks/block_*, target_encoder",
}


def compatibility_fingerprint(config: ml_collections.ConfigDict, abstract_state: Any) -> dict[str, Any]:
    """What must match for a checkpoint to restore: parameter layout, model config, bands, leaf shapes."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    return {
        "param_layout": PARAM_LAYOUT,
        "model": config.model.to_dict(),
        "data.channels": config.data.channels,
        "state_shapes": {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in leaves},
    }


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when compatible)."""
    saved_layout = saved.get("param_layout", 1)  # Checkpoints before the field existed are layout 1.
    if saved_layout != current["param_layout"]:
        return [
            f"parameter layout {saved_layout} ({_PARAM_LAYOUT_NAMES.get(saved_layout, 'unknown')}) in the "
            f"checkpoint, but this version of rejepa_jax reads layout {current['param_layout']} "
            f"({_PARAM_LAYOUT_NAMES[current['param_layout']]}): the parameters were renamed, so the "
            "checkpoint fingerprint changed; retrain, or read it with the release that wrote it"
        ]
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
    """Saves every `every_steps` steps and on demand, keeps the newest `keep`, restores the newest good.

    With `read_only=True` it only restores: the folder is neither created nor cleaned (an in-flight
    save of a live run is left alone), nothing is deleted, and a damaged step is reported, not renamed.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        every_steps: int = 1,
        keep: int = 1,
        async_save: bool = False,
        read_only: bool = False,
    ):
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        if read_only:
            options = ocp.CheckpointManagerOptions(
                read_only=True,
                save_interval_steps=0,
                create=False,
                cleanup_tmp_directories=False,
                enable_async_checkpointing=False,
            )
        else:
            options = ocp.CheckpointManagerOptions(
                save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(max(every_steps, 1)),
                preservation_policy=ocp.checkpoint_managers.LatestN(max(keep, 1)),
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            )
        quiet = _DropReadOnlyNotice()
        python_logging.getLogger("absl").addFilter(quiet)  # Orbax warns that it is read-only.
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, item_names=("state", "data_iter", "meta"), options=options
            )
        finally:
            python_logging.getLogger("absl").removeFilter(quiet)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def set_aside_steps(self) -> list[Path]:
        """The steps renamed aside as unreadable (`<step>.unreadable*`), oldest name first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if SET_ASIDE_PATTERN.match(p.name))

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
        if self.read_only:
            raise RuntimeError(f"The checkpoint folder {self.directory} was opened read-only.")
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

        A damaged step is set aside (read-write) or skipped (read-only), and the previous step is
        tried; None once no step is left (read-write; the caller checks `set_aside_steps`). Read-only,
        a damaged `step` raises DamagedCheckpointError and no good step at all NoUsableCheckpointError.
        Any other failure raises CheckpointRestoreError from its cause and changes nothing on disk.
        """
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"No checkpoint step {step} in {self.directory}; available: {steps}.")
            steps = [step]
        damaged: list[int] = []
        for current in reversed(steps):
            self._check_compatible(current, fingerprint)
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iterator)
            error: Exception | None = None
            try:
                self._check_files(current, data_iterator is not None)
                restored = self._manager.restore(current, args=ocp.args.Composite(**items))
            except Exception as raised:  # Classified below: only proven damage is set aside.
                error = raised
            step_dir = self.directory / str(current)
            reason = damage_evidence(error) if error is not None else None
            if reason is not None and not step_dir.is_dir():
                reason = None  # The step went away while being read (a live run's retention).
                if self.read_only and step is None:
                    logging.warning("Checkpoint step %d was removed while being read.", current)
                    continue
            outcome = _OK if error is None else _DAMAGED if reason is not None else _FAILED
            agreed = self._agree(outcome)
            if agreed == _OK:
                return current, restored.state
            if agreed == _FAILED:
                if outcome != _FAILED:
                    error = RuntimeError("another process failed to restore it (see that process's log)")
                raise CheckpointRestoreError(
                    f"Checkpoint step {current} in {self.directory} could not be restored "
                    f"({_describe(error)}). "
                    "Nothing shows its files damaged, so it was left as it is: fix the cause (file "
                    "permissions, I/O, memory, or a data-pipeline setting changed since it was saved, "
                    "e.g. data.num_workers or the process count) and run again."
                ) from error
            reason = reason or "damaged on another process (see that process's log)"
            damaged.append(current)
            if self.read_only:
                logging.error(
                    "Checkpoint step %d in %s is damaged (%s); left in place (read-only); %s",
                    current,
                    self.directory,
                    reason,
                    "trying the previous step." if current != steps[0] else "no older step is left.",
                )
                if step is not None:
                    raise DamagedCheckpointError(
                        f"Checkpoint step {current} in {self.directory} is damaged: {reason}"
                    ) from error
                continue
            kept = self._set_aside(current)
            logging.error(
                "Checkpoint step %d in %s is damaged (%s); moved to %s; %s",
                current,
                self.directory,
                reason,
                kept,
                "trying the previous step." if current != steps[0] else "no older step is left.",
            )
        if damaged and self.read_only:
            raise NoUsableCheckpointError(
                f"Every checkpoint step {steps} in {self.directory} is damaged; see the errors above."
            )
        return None

    def _check_files(self, step: int, with_data_iter: bool) -> None:
        """Raises DamagedCheckpointError if a file every complete step has is missing.

        `Path.exists` raises (e.g. PermissionError) instead of answering when it cannot tell.
        """
        step_dir = self.directory / str(step)
        required = [step_dir / "state" / "_METADATA", step_dir / "state" / "manifest.ocdbt"]
        if with_data_iter:
            required.append(step_dir / "data_iter")
        missing = [str(p.relative_to(step_dir)) for p in required if not p.exists()]
        if missing and step_dir.is_dir():
            raise DamagedCheckpointError(f"missing {', '.join(missing)}")

    def _agree(self, outcome: int) -> int:
        """The worst outcome over all processes, so that every process takes the same branch."""
        if jax.process_count() == 1:
            return outcome
        return int(np.max(multihost_utils.process_allgather(np.int32(outcome))))

    def _set_aside(self, step: int) -> Path:
        """Renames a damaged step out of Orbax's view (kept for inspection, never deleted)."""
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


class _DropReadOnlyNotice(python_logging.Filter):
    def filter(self, record: python_logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


def _describe(error: BaseException) -> str:
    """`Type: first line` of the innermost cause (Orbax wraps TensorStore's message in a generic one)."""
    chain: list[BaseException] = [error]
    while len(chain) < 20:
        nxt = chain[-1].__cause__ or (None if chain[-1].__suppress_context__ else chain[-1].__context__)
        if nxt is None:
            break
        chain.append(nxt)
    root = chain[-1]
    text = str(root).split(" [tensorstore_spec")[0].strip()
    return f"{type(root).__name__}: {text.splitlines()[0] if text else ''}".rstrip(". ")
