"""The quality-per-compute benchmark gives each method the same FLOP budget and tabulates every row."""

from __future__ import annotations

import argparse

from benchmarks import quality_per_compute as qpc
from rejepa_jax import config_lib


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        data_root=config_lib.SAMPLE_ROOT,
        split_dir="",
        model="Ti/8",
        batch_size=8,
        num_workers=0,
        checkpoint_every=500,
        set=[],
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_methods_differ_only_where_they_should():
    configs = {method: qpc.method_config(method, _args()) for method in qpc.METHODS}
    assert configs["rejepa"].objective.vicreg and not configs["rejepa_no_vicreg"].objective.vicreg
    assert configs["mae"].method == "mae" and configs["rejepa"].method == "rejepa"
    for config in configs.values():
        assert config.model.variant == "Ti/8" and config.batch_size == 8
        assert config.mesh.data == 1 and config.eval.every_steps == 0
    assert configs["rejepa"].model.predictor_depth == configs["rejepa_no_vicreg"].model.predictor_depth


def test_a_cheaper_step_gets_proportionally_more_steps_under_the_same_budget():
    rejepa = qpc.method_config("rejepa", _args())
    mae = qpc.method_config("mae", _args())
    budget = 5e13
    rejepa_steps, rejepa_flops = qpc.steps_for_budget(rejepa, budget)
    mae_steps, mae_flops = qpc.steps_for_budget(mae, budget)
    # MAE's encoder sees a quarter of the patches and its decoder is light: a cheaper step.
    assert mae_flops < rejepa_flops
    assert mae_steps > rejepa_steps
    for steps, flops in ((rejepa_steps, rejepa_flops), (mae_steps, mae_flops)):
        assert steps * flops <= budget < (steps + 1) * flops


def test_table_has_a_row_per_encoder_and_floor():
    metrics = {f"p@{k}": 0.5 for k in qpc.KS} | {f"map@{k}/retrieved": 0.25 for k in qpc.KS}
    results = {
        "runs": {
            "rejepa": {
                "steps": 10,
                "flops_per_image": 2e9,
                "train_seconds": 120.0,
                "encoders": {"target": metrics, "context": metrics},
            }
        },
        "floors": {"color_histogram": metrics},
    }
    lines = qpc.format_table(results).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| rejepa (target) | 10 | 2.00 | 2.0 | 0.500")
    assert lines[4].startswith("| color_histogram | – |")
    assert lines[2].count("0.250") == len(qpc.KS)


def test_every_tuning_trial_is_a_valid_config_on_a_query_subset(tmp_path):
    from benchmarks import short_run_tuning as tuning

    split_dir = tmp_path / "meta"
    split_dir.mkdir()
    rows = ["index,Filename,Label,ClassName"] + [f"{i},a/{i}.jpg,0,A" for i in range(10)]
    (split_dir / "test.csv").write_text("\n".join(rows) + "\n")
    name = tuning.query_subset(split_dir, tmp_path / "out", 4)
    assert (tmp_path / "out" / name).read_text().splitlines() == rows[:5]
    configs = {
        trial: tuning.trial_config(
            trial, data_root="/data", split_dir=str(split_dir), query_csv=tmp_path / "out" / name, steps=40
        )
        for trial in tuning.TRIALS
    }
    assert configs["random_init"].total_steps == 1 and configs["random_init"].optimizer.lr == 0
    assert configs["baseline"].total_steps == 40 and configs["baseline"].model.predictor_depth == 2
    assert configs["predictor_depth_6"].model.predictor_depth == 6
    assert configs["lr_2.5e-4"].optimizer.lr == 2.5e-4
    assert configs["ema_from_0.99"].ema.start == 0.99
    for config in configs.values():
        assert config.data.query_split == str((tmp_path / "out" / name).absolute())
        assert config.data.archive_split == "validation.csv" and config.batch_size == 64
