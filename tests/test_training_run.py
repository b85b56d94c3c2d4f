"""End-to-end runs of the trainer: every config's runlocal variant, resume, and bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from data_fixtures import folder_with_corrupt_files
from helpers import CONFIG_NAMES, RUNLOCAL_ARGS, load_config, losses, tiny_demo

from rejepa_jax import config_lib, encoder_restore, trainer
from rejepa_jax.checkpoint import IncompatibleCheckpointError
from rejepa_jax.data.array_record_dataset import write_folder_dataset
from rejepa_jax.data.errors import BadImageError, BandCountError, DataError
from rejepa_jax.metric_writer import read_metrics

pytestmark = pytest.mark.slow  # Every test here trains.


def expected_descriptors(config) -> set[str]:
    """The result rows a run reports: its encoders and baselines, plus '+std' rows when standardising."""
    names = {f"{config.method}_{e}" for e in config.eval.encoders} | set(config.eval.baselines)
    if config.eval.standardise:
        names |= {f"{name}+std" for name in names if name != "color_histogram"}
    return names


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_runlocal_trains_logs_checkpoints_and_evaluates(tmp_path, name):
    assert name in RUNLOCAL_ARGS, f"configs/{name}.py is new: give its runlocal argument in RUNLOCAL_ARGS"
    config = load_config(name, RUNLOCAL_ARGS[name])
    results = trainer.train_and_evaluate(config, tmp_path)
    rows = read_metrics(tmp_path)
    logged = [row["step"] for row in rows if "train/loss" in row]
    assert logged[-1] == config.total_steps
    assert all(np.isfinite(row["train/loss"]) for row in rows if "train/loss" in row)
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == config.total_steps
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / str(config.total_steps)).is_dir()
    saved = json.loads((tmp_path / trainer.RESULTS_FILE).read_text())
    assert saved.keys() == results.keys() == expected_descriptors(config)
    for report in results.values():
        assert report["effective_rank"] >= 1.0 and report["std_mean"] > 0.0  # Collapse monitors.
        for k in config.eval.ks:
            assert 0.0 <= report[f"p@{k}"] <= 1.0
            assert 0.0 <= report[f"map@{k}/retrieved"] <= 1.0
        if config.data.multi_label:
            assert 0.0 <= report[f"f1@{config.eval.ks[0]}"] <= 1.0


def test_demo_reports_the_baselines_beside_the_model(tmp_path):
    config = tiny_demo(total_steps=2, eval__baselines=("color_histogram", "random_init"))
    results = trainer.train_and_evaluate(config, tmp_path)
    assert set(results) == expected_descriptors(config)
    assert {"rejepa_target", "color_histogram", "random_init"} <= set(results)
    # The colour histogram is far above chance (0.1) on EuroSAT.
    assert results["color_histogram"]["p@5"] > 0.3


def test_eurosat_config_reads_a_prepared_tfds_dataset(tmp_path):
    data_dir = tmp_path / "tfds"
    write_folder_dataset(
        config_lib.SAMPLE_ROOT,
        data_dir,
        "eurosat_sample",
        splits={"archive": ("archive.csv",), "query": ("query.csv",)},
    )
    config = load_config("eurosat", "source=tfds,runlocal")
    config.unlock()
    config.data.tfds_name = "eurosat_sample"
    config.data.tfds_data_dir = str(data_dir)
    config.data.train_split = config.data.archive_split = "archive"
    config.data.query_split = "query"
    config.lock()
    results = trainer.train_and_evaluate(config, tmp_path / "run")
    assert 0.0 <= results["rejepa_target"]["p@5"] <= 1.0


def test_resume_gives_bit_identical_losses_and_params(tmp_path):
    config = tiny_demo(total_steps=6, log_every_steps=1, checkpoint__every_steps=3)
    full = tmp_path / "full"
    trainer.train_and_evaluate(config, full)

    # An interrupted run: the same workdir as it was after step 3's checkpoint.
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    metrics = (resumed / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in metrics if json.loads(line)["step"] <= 3]
    (resumed / "metrics.jsonl").write_text("\n".join(kept) + "\n")

    trainer.train_and_evaluate(config, resumed)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]  # Resumed at 4.
    assert losses(resumed) == losses(full)  # Bit for bit: float equality, not closeness.

    def final_params(workdir):
        restored = encoder_restore.restore_params(config, workdir)[1]
        return jax.tree.leaves(restored)

    for a, b in zip(final_params(full), final_params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rerunning_a_finished_run_only_evaluates(tmp_path):
    config = tiny_demo(total_steps=2)
    first = trainer.train_and_evaluate(config, tmp_path)
    second = trainer.train_and_evaluate(config, tmp_path)
    assert first == second
    assert [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r] == [2]


def test_same_seed_same_losses_other_seed_other_losses(tmp_path):
    config = tiny_demo(total_steps=3, log_every_steps=1)
    trainer.train_and_evaluate(config, tmp_path / "a")
    trainer.train_and_evaluate(config, tmp_path / "b")
    trainer.train_and_evaluate(tiny_demo(total_steps=3, log_every_steps=1, seed=1), tmp_path / "c")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # A learning rate that jumps from 1e-4 to 1e30 after the first steps makes the params overflow.
    config = tiny_demo(
        total_steps=8,
        log_every_steps=1,
        checkpoint__every_steps=1,
        optimizer__start_lr=1e-4,
        optimizer__lr=1e30,
        optimizer__warmup_steps=4,
        checkpoint__async_save=False,
    )
    with pytest.raises(trainer.NonFiniteLossError, match="Non-finite") as error:
        trainer.train_and_evaluate(config, tmp_path)
    failed_step = int(str(error.value).split("step ")[1].split(":")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] == failed_step - 1
    assert f"the last good checkpoint is step {saved[-1]}" in str(error.value)
    params = encoder_restore.restore_params(config, tmp_path)[1]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_incompatible_checkpoint_names_the_differing_key(tmp_path):
    trainer.train_and_evaluate(tiny_demo(total_steps=2), tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.depth: checkpoint 1, config 2"):
        trainer.train_and_evaluate(tiny_demo(total_steps=4, model__depth=2), tmp_path)


def test_checkpoint_with_the_old_parameter_names_is_refused_naming_the_layout_change(tmp_path):
    """A checkpoint written before the rename (no `param_layout`, old paths) stops both training and
    readers with a message naming the fingerprint change, and nothing in the folder is touched."""
    config = tiny_demo(total_steps=2)
    trainer.train_and_evaluate(config, tmp_path)
    step_dir = tmp_path / "checkpoints" / "2"
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert meta.pop("param_layout") == 2
    renamed = {".target_encoder": ".target_params", "'context_encoder']['blocks'": "'encoder']['encoder'"}
    old_shapes = {}
    for path, shape in meta["state_shapes"].items():
        for new_name, old_name in renamed.items():
            path = path.replace(new_name, old_name)
        old_shapes[path] = shape
    meta["state_shapes"] = old_shapes
    meta_file.write_text(json.dumps(meta))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    expected = r"parameter layout 1 \(params/encoder/encoder/block_\*, target_params\).*layout 2"
    with pytest.raises(IncompatibleCheckpointError, match=expected):
        trainer.train_and_evaluate(tiny_demo(total_steps=4), tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match="checkpoint fingerprint changed"):
        encoder_restore.restore_params(config, tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    config = tiny_demo(total_steps=4, checkpoint__every_steps=2, log_every_steps=1)
    trainer.train_and_evaluate(config, tmp_path)
    # Damage every array file of the newest checkpoint.
    damaged = 0
    for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            damaged += 1
    assert damaged
    before = _file_sizes(tmp_path / "checkpoints" / "4")
    longer = tiny_demo(total_steps=6, checkpoint__every_steps=2, log_every_steps=1)
    trainer.train_and_evaluate(longer, tmp_path)
    assert "Checkpoint step 4" in caplog.text and "is damaged" in caplog.text
    # Set aside with every file as it was (kept for inspection), beside the new step 4.
    assert _file_sizes(tmp_path / "checkpoints" / "4.unreadable") == before
    assert (tmp_path / "checkpoints" / "4").is_dir()
    # Steps 3 and 4 were trained again from step 2's checkpoint.
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(3) == 2 and steps.count(4) >= 2


def test_a_run_below_the_collapse_threshold_warns_once_and_zero_silences_it(tmp_path, caplog):
    # A threshold above any std a LayerNorm'd encoder can give puts every logged step "below" it.
    config = tiny_demo(total_steps=3, log_every_steps=1, collapse_warning_std=100.0)
    trainer.train_and_evaluate(config, tmp_path / "warned")
    logged_std = [
        row["train/context_std"] for row in read_metrics(tmp_path / "warned") if "train/context_std" in row
    ]
    assert len(logged_std) == 3 and max(logged_std) < 100.0
    # The fall at step 1 only (the console shows it once too: test_configs' command-line run).
    assert caplog.text.count("Step 1: train/context_std") == 1
    assert caplog.text.count("is below collapse_warning_std=100") == 1
    caplog.clear()
    trainer.train_and_evaluate(
        tiny_demo(total_steps=3, log_every_steps=1, collapse_warning_std=0.0), tmp_path / "off"
    )
    assert "collapse_warning_std" not in caplog.text


def test_a_negative_collapse_threshold_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="collapse_warning_std must be >= 0"):
        trainer.train_and_evaluate(tiny_demo(collapse_warning_std=-0.1), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # No checkpoint folder, log or config written.


def _file_sizes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*") if p.is_file()}


def test_corrupt_image_stops_with_its_name_or_is_skipped_and_counted(tmp_path):
    root = tmp_path / "images"
    bad = folder_with_corrupt_files(root, total=24, bad_indices=(3, 11), size=64)
    base = {
        "total_steps": 3,
        "log_every_steps": 1,
        "batch_size": 8,
        "data__root": str(root),
        "data__train_split": "",
        "data__archive_split": "",
        "data__query_split": "",
        "data__mean": (127.5,) * 3,
        "data__std": (64.0,) * 3,
    }
    with pytest.raises(BadImageError, match=bad[0] + "|" + bad[1]):
        trainer.train_and_evaluate(tiny_demo(**base), tmp_path / "strict")
    trainer.train_and_evaluate(tiny_demo(**base, data__skip_bad=True), tmp_path / "skip")
    rows = read_metrics(tmp_path / "skip")
    # 3 steps x 8 images from 24 records with 2 bad ones: at least one bad record was crossed.
    assert rows[-1]["data/skipped_records"] >= 1


def test_band_count_mismatch_is_a_clear_error(tmp_path):
    config = tiny_demo(total_steps=1, data__channels=4, data__mean=(100.0,) * 4, data__std=(50.0,) * 4)
    with pytest.raises(BandCountError, match=r"expected 4 band\(s\) \(data.channels\) but found 3"):
        trainer.train_and_evaluate(config, tmp_path)


def test_empty_dataset_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tiny_demo(
        data__root=str(empty), data__train_split="", data__archive_split="", data__query_split=""
    )
    with pytest.raises(DataError, match=str(empty)):
        trainer.train_and_evaluate(config, tmp_path / "run")


def test_the_step_refuses_to_trace_twice():
    step = jax.jit(trainer._trace_once(lambda state, batch: (state, batch["x"].sum())))
    step(0, {"x": np.ones(3)})
    step(1, {"x": np.ones(3)})
    with pytest.raises(trainer.RetraceError, match="traced again"):
        step(0, {"x": np.ones(4)})


def test_standardised_rows_are_reported_beside_the_raw_descriptors(tmp_path):
    results = trainer.train_and_evaluate(
        tiny_demo(total_steps=1, eval__standardise=True, eval__baselines=("random_init", "color_histogram")),
        tmp_path,
    )
    assert {"rejepa_target", "rejepa_target+std", "random_init", "random_init+std", "color_histogram"} <= set(
        results
    )
    assert "color_histogram+std" not in results
    # Standardising spreads the descriptor over more directions than the raw pooled tokens use.
    assert results["rejepa_target+std"]["effective_rank"] > results["rejepa_target"]["effective_rank"]
