"""`profile.steps`: a jax.profiler trace where TensorBoard's profile plugin reads it; bad values fail."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from helpers import tiny_demo

from rejepa_jax import profiling, trainer

PROFILE_DIR = Path("tensorboard") / "plugins" / "profile"


def _traces(workdir: Path) -> list[Path]:
    return sorted((workdir / PROFILE_DIR).glob("*/*.xplane.pb"))


@pytest.mark.slow
def test_profiled_steps_write_one_trace_in_the_tensorboard_folder(tmp_path):
    trainer.train_and_evaluate(tiny_demo(total_steps=3, profile__steps=(2, 3)), tmp_path)
    traces = _traces(tmp_path)
    assert len(traces) == 1, traces  # One trace: started once at step 2, stopped once after step 3.
    assert traces[0].stat().st_size > 0
    assert b"step_num" in traces[0].read_bytes()  # The steps' StepTraceAnnotation is recorded.
    # The trace is closed: a new one can start (a session left open would raise here).
    jax.profiler.start_trace(tmp_path / "probe")
    jax.profiler.stop_trace()


@pytest.mark.slow
def test_a_run_without_profile_steps_writes_no_trace(trained):
    """`trained` is the suite's shared 2-step tiny run, with the default `profile.steps=()`."""
    assert (trained / "tensorboard").is_dir()
    assert not (trained / PROFILE_DIR).exists()


class _RecordingProfiler:
    """Stands in for jax.profiler's start/stop to see which steps a window traces."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: self.calls.append("start"))
        monkeypatch.setattr(jax.profiler, "stop_trace", lambda: self.calls.append("stop"))


def _run_steps(profiler: profiling.StepProfiler, steps: range, calls: list[str]) -> list[int]:
    """Steps run inside an open trace."""
    traced = []
    for step in steps:
        with profiler.step(step):
            if calls and calls[-1] == "start":
                traced.append(step)
        profiler.step_done(step, jax.numpy.zeros(()))
    profiler.close()
    return traced


def test_resume_traces_only_the_rest_of_the_window(monkeypatch, tmp_path):
    recorder = _RecordingProfiler(monkeypatch)
    fresh = profiling.StepProfiler((3, 5), 10, tmp_path, enabled=True)
    assert _run_steps(fresh, range(1, 11), recorder.calls) == [3, 4, 5]
    assert recorder.calls == ["start", "stop"]

    recorder.calls.clear()  # Resumed from the checkpoint of step 3: steps 4 and 5 are left.
    resumed = profiling.StepProfiler((3, 5), 10, tmp_path, enabled=True)
    assert _run_steps(resumed, range(4, 11), recorder.calls) == [4, 5]
    assert recorder.calls == ["start", "stop"]

    recorder.calls.clear()  # Resumed past the window: nothing is traced again.
    assert (
        _run_steps(profiling.StepProfiler((3, 5), 10, tmp_path, enabled=True), range(6, 11), recorder.calls)
        == []
    )
    # Not process 0, or no window: never traces.
    assert (
        _run_steps(profiling.StepProfiler((3, 5), 10, tmp_path, enabled=False), range(1, 11), recorder.calls)
        == []
    )
    assert (
        _run_steps(profiling.StepProfiler((), 10, tmp_path, enabled=True), range(1, 11), recorder.calls) == []
    )
    assert recorder.calls == []


def test_a_loop_stopped_inside_the_window_still_writes_its_trace(monkeypatch, tmp_path):
    recorder = _RecordingProfiler(monkeypatch)
    profiler = profiling.StepProfiler((2, 8), 10, tmp_path, enabled=True)
    with profiler.step(2):
        pass
    profiler.step_done(2, None)
    assert recorder.calls == ["start"]
    profiler.close()  # The trainer's `finally`, after a preemption or an error.
    profiler.close()
    assert recorder.calls == ["start", "stop"]


def test_profile_steps_parse_one_step_or_an_inclusive_range():
    assert profiling.parse_steps((), 10) is None
    assert profiling.parse_steps((4,), 10) == (4, 4)
    assert profiling.parse_steps((1, 10), 10) == (1, 10)
    assert profiling.parse_steps([2, 3], 10) == (2, 3)  # config.json lists.


@pytest.mark.parametrize(
    "steps",
    [(0, 2), (-1, 2), (5, 3), (11, 12), (9, 11), (1, 2, 3), (2.5, 3), ("a,b",), (True, 2)],
)
def test_invalid_profile_steps_are_a_config_error_naming_the_key(steps, tmp_path):
    with pytest.raises(ValueError, match=r"profile\.steps=.*total_steps=10"):
        profiling.StepProfiler(steps, 10, tmp_path, enabled=False)  # Every process checks.


def test_the_trainer_rejects_invalid_profile_steps_before_training(tmp_path):
    config = tiny_demo(total_steps=2, profile__steps=(3, 4))
    with pytest.raises(ValueError, match=r"profile\.steps=\(3, 4\)"):
        trainer.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
