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
