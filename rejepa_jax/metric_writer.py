"""Run records in the work directory: the resolved config, a JSONL metric log and TensorBoard scalars.

`metrics.jsonl` is the record of truth: one JSON object per `write_scalars` call, written with a
single write and flushed at once, so a run killed at any point keeps every row written before. The
TensorBoard event file carries the same scalars for live plots. Only process 0 writes; every other
process builds a disabled writer whose methods do nothing, so call sites need no rank checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _json_default(value: Any) -> Any:
    """JSON for the non-JSON leaves a config may hold (numpy scalars and arrays, paths, ...)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _to_plain_dict(config: Any) -> dict:
    """A ConfigDict (or anything with `to_dict`) or a mapping as plain nested dicts."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"Expected a mapping or a ConfigDict, got {type(config).__name__}.")


def tensorboard_tag(name: str) -> str:
    """TensorBoard tags allow no '@': `p@10` becomes `p_at_10` (the JSONL keeps the original name)."""
    return name.replace("@", "_at_")


class MetricWriter:
    """Writes `config.json`, `metrics.jsonl` and `tensorboard/` under `workdir` when `enabled`."""

    def __init__(self, workdir: str | Path, *, enabled: bool) -> None:
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._jsonl = None
        self._tensorboard = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            # Append: a resumed run continues the same log (`read_metrics` resolves repeated steps).
            self._jsonl = open(self.workdir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
            self._tensorboard = SummaryWriter(logdir=str(self.workdir / TENSORBOARD_DIR))

    def write_config(self, config: Any) -> None:
        """Saves the config as pretty JSON with sorted keys, so two runs' configs diff cleanly."""
        if not self.enabled:
            return
        text = json.dumps(_to_plain_dict(config), indent=2, sort_keys=True, default=_json_default)
        (self.workdir / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Appends `{"step": step, **scalars}` to the JSONL log and logs each scalar to TensorBoard.

        Values may be Python, numpy or JAX scalars; they are stored as floats. NaN and inf are kept
        (as the `NaN`/`Infinity` tokens Python's json reads back), since a diverging loss must show.
        """
        if not self.enabled:
            return
        step = int(step)
        values = {name: float(value) for name, value in scalars.items()}
        if "step" in values:
            raise ValueError("'step' is reserved for the step number.")
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tensorboard.add_scalar(tensorboard_tag(name), value, global_step=step)
        self._tensorboard.flush()

    def write_text(self, step: int, tag: str, text: str) -> None:
        """A free-text TensorBoard entry (e.g. the command line or a model summary)."""
        if not self.enabled:
            return
        self._tensorboard.add_text(tag, text, global_step=int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        self.enabled = False

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a `metrics.jsonl` (or of the work directory holding one), one per step, by step.

    Rows that share a step are merged key by key with the later row winning: after a resume the
    re-logged steps replace the stale ones, and scalars written separately at one step (train and
    eval) end up in one row. A truncated last line (a run killed mid-write) is skipped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    by_step: dict[int, dict[str, float]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break
            raise
        step = int(row["step"])
        by_step.setdefault(step, {"step": step}).update(row)
    return [by_step[step] for step in sorted(by_step)]
