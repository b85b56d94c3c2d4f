"""The quality-per-compute benchmark: protocols, FLOP budgets, the results table and the plot."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from benchmarks import quality_per_compute as qpc
from rejepa_jax import config_lib, optim


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        config="configs/eurosat.py:model=Ti/8",
        protocol="tuning",
        data_root=config_lib.SAMPLE_ROOT,
        split_dir=config_lib.SAMPLE_ROOT,
        batch_size=8,
        num_workers=0,
        checkpoint_every=100,
        floors=False,
        set=[],
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_protocols_keep_the_test_queries_out_of_tuning():
    tuning = qpc.run_config(_args())
    assert tuning.data.train_split == tuning.data.archive_split == "train.csv"
    assert tuning.data.query_split == "validation.csv"
    test = qpc.run_config(_args(protocol="test", floors=True, set=["optimizer.lr=3e-4"]))
    assert test.data.train_split == test.data.archive_split == "train.csv,validation.csv"
    assert test.data.query_split == "test.csv"
    assert set(test.eval.baselines) == set(qpc.FLOORS) and not tuning.eval.baselines
    assert test.optimizer.lr == 3e-4 and test.batch_size == 8 and test.mesh.data == 1


@pytest.mark.slow  # Compiles two configs' train steps for their FLOPs.
def test_a_cheaper_step_gets_proportionally_more_steps_under_the_same_budget():
    rejepa = qpc.run_config(_args())
    mae = qpc.run_config(_args(config="configs/eurosat_mae.py:model=Ti/8"))
    budget = 5e13
    rejepa_steps, rejepa_flops = qpc.steps_for_budget(rejepa, budget)
    mae_steps, mae_flops = qpc.steps_for_budget(mae, budget)
    # MAE's encoder sees a quarter of the patches and its decoder is light: a cheaper step.
    assert mae_flops < rejepa_flops and mae_steps > rejepa_steps
    for steps, flops in ((rejepa_steps, rejepa_flops), (mae_steps, mae_flops)):
        assert steps * flops <= budget < (steps + 1) * flops
    config, flops = qpc.budget_config(mae, budget)
    assert config.total_steps == mae_steps and config.optimizer.warmup_steps == mae_steps // 15


def _metrics(p20: float) -> dict[str, float]:
    return {f"p@{k}": p20 for k in qpc.KS} | {"map@20/retrieved": 0.25, "effective_rank": 12.0}


def _results() -> dict:
    run = {
        "method": "rejepa",
        "label": "REJEPA",
        "steps": 10,
        "pflop": 0.1,
        "flops_per_image": 2e9,
        "seconds": 120.0,
        "ema_initial_weight": 0.5,
        "descriptors": {"rejepa_target": _metrics(0.6), "rejepa_context": _metrics(0.5)},
    }
    bigger = {
        **run,
        "pflop": 0.3,
        "descriptors": {"rejepa_target": _metrics(0.7), "rejepa_context": _metrics(0.5)},
    }
    mae = {
        **run,
        "method": "mae",
        "label": "MAE",
        "descriptors": {
            "mae_context": _metrics(0.55),
            "color_histogram": _metrics(0.65),
            "random_init": _metrics(0.45),
        },
    }
    return {"runs": {"test/a": run, "test/b": bigger, "test/mae": mae, "tuning/a": run}}


def test_table_has_a_row_per_descriptor_and_floor_of_one_protocol():
    lines = qpc.format_table(_results(), "test").splitlines()
    assert len(lines) == 2 + 2 + 2 + 3
    assert lines[2].startswith("| a | 0.100 | 10 | 2.00 | 2 | rejepa_target | 0.600")
    assert lines[2].endswith("| 12.0 | 0.500 |")  # The EMA share on the target row only.
    assert lines[3].endswith("| 12.0 | – |")
    assert any(line.startswith("| color_histogram | – |") for line in lines)
    assert len(qpc.format_table(_results(), "tuning").splitlines()) == 2 + 2


def test_summary_keeps_the_table_metrics_and_the_ema_share():
    config = qpc.run_config(_args())
    config = config_lib.apply_overrides(config, ["total_steps=100"])
    metrics = {"rejepa_target": {**_metrics(0.6), "ndcg@5": 0.1, "std_mean": 0.3}}
    summary = qpc.summarise(config, metrics, flops_per_step=1e12)
    assert summary["pflop"] == pytest.approx(0.1) and summary["flops_per_image"] == pytest.approx(1.25e11)
    assert "ndcg@5" not in summary["descriptors"]["rejepa_target"]
    assert summary["ema_initial_weight"] == pytest.approx(optim.ema_initial_weight(config.ema, 100, 100))
    assert 0.0 < summary["ema_initial_weight"] < 1.0


def test_plot_draws_one_curve_per_method_and_the_floors(tmp_path):
    path = tmp_path / "quality.png"
    qpc.plot(_results(), "test", path)
    with Image.open(path) as image:
        assert image.size[0] > 300 and image.size[1] > 200
    assert qpc.reported_descriptor(_results()["runs"]["test/mae"]) == "mae_context"
    assert qpc.reported_descriptor({**_results()["runs"]["test/a"], "descriptor": "rejepa_context"}) == (
        "rejepa_context"
    )


def test_a_finished_run_is_never_run_again(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"runs": {"test/a": {"done": True}}}))
    qpc.run(_args(out=tmp_path, protocol="test", name="a", budget_pflop=0.1))
    assert "is finished" in capsys.readouterr().out


def test_demo_tuning_splits_draw_the_demo_size_per_class_from_train_and_validation(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    for name, count in (("train.csv", 100), ("validation.csv", 30), ("test.csv", 30)):
        rows = ["index,Filename,Label,ClassName"]
        rows += [f"{i},{c}/{name[:2]}_{i}.jpg,{j},{c}" for j, c in enumerate("AB") for i in range(count)]
        (meta / name).write_text("\n".join(rows) + "\n")
    config = qpc.run_config(_args(protocol="demo_tuning", split_dir=str(meta), out=str(tmp_path / "out")))
    split_dir = tmp_path / "out" / "demo_splits"
    assert config.data.split_dir == str(split_dir.resolve())
    assert config.data.train_split == config.data.archive_split == "demo_train.csv"
    for name, prefix, per_class in (("demo_train.csv", "tr", 80), ("demo_validation.csv", "va", 20)):
        rows = (split_dir / name).read_text().splitlines()[1:]
        assert len(rows) == 2 * per_class and len(set(rows)) == len(rows)
        assert all(f"/{prefix}_" in row for row in rows)  # Never the test split.
        assert sum(row.endswith(",A") for row in rows) == per_class


def _curve_results(points: dict[str, list[tuple[float, float]]]) -> dict:
    runs = {}
    for label, curve in points.items():
        for pflop, p20 in curve:
            runs[f"test/{label}_{pflop}"] = {
                "label": label,
                "method": "mae" if label == "MAE" else "rejepa",
                "pflop": pflop,
                "descriptor": "d",
                "descriptors": {"d": {"p@20": p20}},
            }
    return {"runs": runs}


def test_compute_to_reach_interpolates_in_log_compute_and_bounds_outside_the_measured_range():
    curve = [(0.1, 0.60), (1.0, 0.70)]
    relation, pflop = qpc.compute_to_reach(curve, 0.65)
    assert relation == "=" and pflop == pytest.approx(0.1**0.5)  # Halfway in log-PFLOP.
    assert qpc.compute_to_reach(curve, 0.55) == ("<=", 0.1)
    assert qpc.compute_to_reach(curve, 0.71) == (">", 1.0)
    # A curve that dips is read at its first crossing.
    assert qpc.compute_to_reach([(0.1, 0.5), (0.3, 0.7), (1.0, 0.6)], 0.6)[0] == "="
    with pytest.raises(ValueError, match="no finished runs"):
        qpc.compute_to_reach([], 0.5)


def test_compute_to_match_table_states_the_saving_or_its_bound():
    results = _curve_results({"REJEPA": [(0.1, 0.65), (1.0, 0.75)], "MAE": [(0.1, 0.60), (1.0, 0.70)]})
    assert qpc.p20_curve(results, "test", "MAE") == [(0.1, 0.60), (1.0, 0.70)]
    assert qpc.p20_curve(results, "tuning", "MAE") == []
    rerun = {**results["runs"]["test/MAE_0.1"], "descriptors": {"d": {"p@20": 0.62}}}
    assert qpc.p20_curve({"runs": {**results["runs"], "test/MAE_0.1_rerun": rerun}}, "test", "MAE")[0] == (
        0.1,
        0.62,
    )
    lines = qpc.format_compute_to_match(results, "test", "REJEPA", "MAE").splitlines()
    assert len(lines) == 4
    # MAE reaches 0.65 at 10**-0.5 = 0.316 PFLOP: REJEPA's 0.1 saves 1 - 0.1/0.316 = 68 %.
    assert lines[2] == "| 0.100 | 0.650 | 0.316 | 68% |"
    # MAE never reaches 0.75 within 1 PFLOP: only a bound on the saving.
    assert lines[3] == "| 1.000 | 0.750 | > 1.000 | > 0% |"
    # A bound below zero (the reference has only smaller runs) is no statement.
    results = _curve_results({"REJEPA": [(0.3, 0.75)], "MAE": [(0.1, 0.60)]})
    assert (
        qpc.format_compute_to_match(results, "test", "REJEPA", "MAE").splitlines()[2].endswith("| unknown |")
    )


def test_a_run_records_its_budget_commit_and_command_and_a_stopped_run_records_nothing(tmp_path, monkeypatch):
    """The bookkeeping around one run; the training itself is the trainer's own tests' business."""
    finished: list[dict] = [{}, {"rejepa_target": _metrics(0.6)}]  # First stopped by SIGTERM, then done.
    monkeypatch.setattr(
        qpc.cost_report, "compile_cost", lambda config: argparse.Namespace(flops_per_step=1e12)
    )
    monkeypatch.setattr(qpc.trainer, "train_and_evaluate", lambda config, workdir: finished.pop(0))
    args = _args(out=tmp_path, protocol="test", name="a", budget_pflop=0.1, steps=0, label="", descriptor="")
    qpc.run(args)
    assert not (tmp_path / "results.json").exists()
    qpc.run(args)
    result = json.loads((tmp_path / "results.json").read_text())["runs"]["test/a"]
    assert result["done"] and result["steps"] == 100 and result["pflop"] == pytest.approx(0.1)
    assert result["commit"] == qpc.versions()["rejepa_jax_commit"]
    assert result["commits"] == [result["commit"]]  # Two invocations of one commit: named once.
    # Each invocation logs its start and its end; the minutes add up over both.
    entries = [json.loads(line) for line in (tmp_path / "test" / "a" / qpc.INVOCATIONS_FILE).open()]
    assert [sorted(entry) for entry in entries] == [["commit", "started"], ["ended", "seconds"]] * 2
    assert result["seconds"] == pytest.approx(entries[1]["seconds"] + entries[3]["seconds"])
    assert result["seconds_complete"]
    assert result["descriptor"] == "rejepa_target" and result["label"] == "a"
    assert result["descriptors"]["rejepa_target"]["p@20"] == 0.6


def test_minutes_of_a_run_with_a_killed_invocation_are_a_lower_bound(tmp_path):
    qpc.record_invocation(tmp_path)  # Killed outright: no end recorded.
    qpc.record_invocation(tmp_path)
    qpc.record_invocation_end(tmp_path, 600.0)
    assert qpc.invocation_seconds(tmp_path) == (600.0, False)
    qpc.record_invocation(tmp_path)
    qpc.record_invocation_end(tmp_path, 1200.0)
    run_result = {"seconds": 1800.0, "seconds_complete": False}
    assert qpc.invocation_seconds(tmp_path) == (1800.0, False)
    assert qpc.format_minutes(run_result) == "≥30"
    assert qpc.format_minutes({"seconds": 1800.0}) == "30"  # Results written before ends were recorded.


def test_budget_table_has_a_column_per_budget_and_the_later_rerun_wins():
    results = _results()
    for run_result in results["runs"].values():
        for metrics in run_result["descriptors"].values():
            metrics["map@20/retrieved"] = metrics["p@20"] + 0.1
    rerun = {
        **results["runs"]["test/a"],
        "descriptors": {"rejepa_target": {"p@20": 0.62, "map@20/retrieved": 0.7}},
    }
    results["runs"]["test/a_rerun"] = rerun
    lines = qpc.format_budget_table(results, "test").splitlines()
    assert lines[0] == "| method | 0.1 PFLOP | 0.3 PFLOP | 1 PFLOP |"
    assert lines[2] == "| MAE | 0.550 / 0.650 | not run | not run |"
    assert lines[3] == "| REJEPA | 0.620 / 0.700 | 0.700 / 0.800 | not run |"
    assert lines[4].startswith("| color histogram (no training) | 0.650 / 0.750 | 0.650 / 0.750 |")
    assert lines[5].startswith("| random init (no training) | 0.450 / 0.550 |")
    assert len(lines) == 6


def test_a_run_resumed_under_another_commit_names_both(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        qpc.cost_report, "compile_cost", lambda config: argparse.Namespace(flops_per_step=1e12)
    )
    monkeypatch.setattr(
        qpc.trainer, "train_and_evaluate", lambda config, workdir: {"rejepa_target": _metrics(0.6)}
    )
    workdir = tmp_path / "test" / "a"
    workdir.mkdir(parents=True)
    (workdir / qpc.INVOCATIONS_FILE).write_text(json.dumps({"commit": "0" * 40}) + "\n")
    args = _args(out=tmp_path, protocol="test", name="a", budget_pflop=0.1, steps=0, label="", descriptor="")
    qpc.run(args)
    result = json.loads((tmp_path / "results.json").read_text())["runs"]["test/a"]
    current = qpc.versions()["rejepa_jax_commit"]
    assert result["commits"] == ["0" * 40, current] and result["commit"] == current
    assert "trained by more than one commit" in capsys.readouterr().out


def test_compute_to_reach_the_goal_is_measured_extrapolated_or_unknown():
    # Measured: the curve crosses 0.65 halfway (in log-PFLOP) between 0.1 and 1.0.
    assert qpc.extrapolated_compute_to_reach([(0.1, 0.60), (1.0, 0.70)], 0.65) == (
        "measured",
        pytest.approx(10**-0.5),
    )
    # Extrapolated: +0.05 per decade from 0.70 at 1 PFLOP reaches 0.80 two decades later.
    how, pflop = qpc.extrapolated_compute_to_reach([(0.01, 0.60), (0.1, 0.65), (1.0, 0.70)], 0.80)
    assert how == "extrapolated" and pflop == pytest.approx(100.0)
    assert qpc.extrapolated_compute_to_reach([(0.1, 0.70)], 0.80) == ("unknown", None)
    assert qpc.extrapolated_compute_to_reach([(0.1, 0.70), (1.0, 0.69)], 0.80) == ("unknown", None)
    lines = qpc.format_goal_table(
        _curve_results({"REJEPA": [(0.1, 0.70), (1.0, 0.75)], "MAE": [(0.3, 0.82)]}), "test", 0.80
    ).splitlines()
    assert lines[2] == "| MAE | 0.820 (0.300) | 0.30 | measured curve |"
    assert lines[3] == (
        "| REJEPA | 0.750 (1.000) | 10.00 | extrapolated, log-linear from the last two points |"
    )
