"""Console progress line and the throughput tracker."""

import sys

from rejepa_jax.progress import Throughput, TrainProgress, format_scalars


def test_throughput_uses_the_clock_between_log_steps():
    ticks = iter([10.0, 12.0, 13.0])
    tracker = Throughput(batch_size=32, clock=lambda: next(ticks))
    assert tracker.update(100) == 0.0  # Starts the clock.
    assert tracker.update(110) == 10 * 32 / 2.0
    assert tracker.update(120) == 10 * 32 / 1.0


def test_progress_line_shows_scalars_rate_and_step(capsys):
    progress = TrainProgress(total_steps=10, initial_step=2, enabled=True)
    progress.update(6, {"loss": 0.123456, "lr": 1e-3}, images_per_second=55.5)
    progress.close()
    err = capsys.readouterr().err
    assert "step 6/10" in err and "loss 0.1235" in err and "lr 0.001" in err and "img/s 55.5" in err


def test_a_line_logged_while_cleared_appears_once_above_the_redrawn_bar(capsys):
    progress = TrainProgress(total_steps=10, enabled=True)
    progress.update(3, {"loss": 1.0}, 2.0)
    with progress.cleared():
        print("context_std fell", file=sys.stderr)
    progress.close()
    err = capsys.readouterr().err
    assert err.count("context_std fell") == 1
    assert err.rindex("step 3/10") > err.index("context_std fell")  # the bar is drawn again below it


def test_disabled_progress_prints_nothing(capsys):
    progress = TrainProgress(total_steps=10, enabled=False)
    progress.update(5, {"loss": 1.0}, 1.0)
    with progress.cleared():
        pass
    progress.close()
    assert capsys.readouterr().err == ""
    assert format_scalars({"a": 1234567.0}) == "a 1.235e+06"
