"""The run records: config.json, metrics.jsonl and the TensorBoard event file."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from rejepa_jax.metric_writer import MetricWriter, read_metrics


def _event_scalars(tb_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the event files, parsed from the TFRecord framing
    (u64 length, u32 crc, payload, u32 crc)."""
    found = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            found += [
                (event.step, v.tag, v.simple_value) for v in event.summary.value if v.HasField("simple_value")
            ]
    return found


def test_writes_config_jsonl_and_tensorboard(tmp_path):
    config = ml_collections.ConfigDict(
        {"seed": 0, "model": {"variant": "Ti/8", "width": 0}, "scale": (0.3, 1.0)}
    )
    with MetricWriter(tmp_path / "run", enabled=True) as writer:
        writer.write_config(config)
        writer.write_scalars(10, {"loss": 0.5, "lr": np.float32(1e-3)})
        writer.write_scalars(20, {"loss": 0.25, "lr": 2e-3})
        writer.write_text(0, "command", "train --config demo")
    run = tmp_path / "run"

    text = (run / "config.json").read_text()
    assert json.loads(text) == {"model": {"variant": "Ti/8", "width": 0}, "scale": [0.3, 1.0], "seed": 0}
    assert text.index('"model"') < text.index('"scale"') < text.index('"seed"')  # sorted keys
    assert "\n  " in text  # indented

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [
        {"step": 10, "loss": 0.5, "lr": pytest.approx(1e-3)},
        {"step": 20, "loss": 0.25, "lr": 2e-3},
    ]
    assert read_metrics(run / "metrics.jsonl") == rows
    assert read_metrics(run) == rows  # the work directory works too

    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _event_scalars(run / "tensorboard")
    assert (10, "loss", 0.5) in scalars and (20, "loss", 0.25) in scalars
    assert any(step == 20 and tag == "lr" and value == pytest.approx(2e-3) for step, tag, value in scalars)


def test_rows_are_on_disk_before_close(tmp_path):
    writer = MetricWriter(tmp_path, enabled=True)
    writer.write_scalars(1, {"loss": float("nan")})
    # No close: a killed run must still have the row.
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["step"] == 1 and math.isnan(rows[0]["loss"])
    writer.close()


def test_resume_appends_and_the_last_row_wins(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as writer:
        for step in (100, 200, 300):
            writer.write_scalars(step, {"loss": step / 1000})
    # Resumed from the step-200 checkpoint: steps 300 and 400 are logged again / anew.
    with MetricWriter(tmp_path, enabled=True) as writer:
        writer.write_scalars(300, {"loss": 0.9})
        writer.write_scalars(300, {"eval/p@10": 0.7})
        writer.write_scalars(400, {"loss": 0.4})
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6
    assert read_metrics(tmp_path) == [
        {"step": 100, "loss": 0.1},
        {"step": 200, "loss": 0.2},
        {"step": 300, "loss": 0.9, "eval/p@10": 0.7},
        {"step": 400, "loss": 0.4},
    ]


def test_a_truncated_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}]
    path.write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(json.JSONDecodeError):
        read_metrics(path)  # corruption in the middle is an error, not silently skipped


def test_step_is_a_reserved_name(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as writer, pytest.raises(ValueError, match="reserved"):
        writer.write_scalars(1, {"step": 3.0})


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricWriter(tmp_path / "run", enabled=False)
    writer.write_config({"seed": 0})
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_text(1, "note", "hello")
    writer.close()
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []
