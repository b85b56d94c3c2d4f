"""Every config builds, locks, and traces its full-size train step on abstract inputs."""

from __future__ import annotations

import subprocess
import sys

import jax
import pytest
from helpers import CONFIG_NAMES, REPO, RUNLOCAL_ARGS, load_config

from rejepa_jax import config_lib, run_setup
from rejepa_jax.train_step import make_train_step


def test_every_config_file_is_covered_by_the_training_run_test():
    # The end-to-end training test runs each config in RUNLOCAL_ARGS: exactly the files in configs/.
    on_disk = {p.stem for p in (REPO / "configs").glob("*.py")}
    assert set(CONFIG_NAMES) == on_disk >= {"demo", "eurosat", "bigearthnet_s2", "fmow_rgb", "eurosat_mae"}
    assert set(RUNLOCAL_ARGS) == on_disk, "RUNLOCAL_ARGS in tests/helpers.py must list every config"
    for name, arg in RUNLOCAL_ARGS.items():
        config = load_config(name, arg)
        assert config.total_steps <= 10 and config.batch_size <= 16, f"{name}:{arg} is not a short run"


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("arg", ["", "runlocal"])
def test_config_builds_locked_and_valid(name, arg):
    config = load_config(name, arg)
    config_lib.validate(config)
    with pytest.raises(AttributeError, match="Did you mean"):
        config.data.image_sze = 3
    assert config.batch_size % 8 == 0 or arg == "runlocal"


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.slow
def test_full_size_train_step_traces_on_abstract_inputs(name):
    config = load_config(name, "")
    run = run_setup.build_run(config)
    step = make_train_step(
        config, encoder=run.encoder, predictor=run.predictor, optimizer=run.optimizer, expander=run.expander
    )
    new_state, metrics = jax.eval_shape(step, run.abstract_state, run.batch)
    assert jax.tree.structure(new_state) == jax.tree.structure(run.abstract_state)
    for new, old in zip(jax.tree.leaves(new_state), jax.tree.leaves(run.abstract_state), strict=True):
        assert (new.shape, new.dtype) == (old.shape, old.dtype)
    assert metrics["loss"].shape == ()
    image_shape = run.batch["image"].shape
    size, channels = config.data.image_size, config.data.channels
    assert image_shape[0] == config.batch_size and image_shape[-3:] == (size, size, channels)
    views = config.data.global_views
    assert len(image_shape) == (5 if views > 1 else 4) and (views == 1 or image_shape[1] == views)


def test_recipes_are_one_argument_away_and_differ_where_they_should():
    new, ijepa, mae = (load_config("eurosat", f"recipe={name}") for name in ("rejepa", "ijepa", "mae"))
    assert load_config("eurosat", "").to_dict() == new.to_dict()  # The new recipe is the default.
    assert load_config("demo", "").data.global_views == new.data.global_views
    assert new.data.global_views == 2 and new.model.expander_widths and new.model.predictor_joint_targets
    # The default drops the latent prediction; `rejepa_predict` is the same recipe with it, at the
    # learning rate it was measured with (the default's 1e-3 was tuned without the prediction).
    predict = load_config("eurosat", "recipe=rejepa_predict")
    assert new.objective.prediction_weight == 0.0 and predict.objective.prediction_weight == 1.0
    assert (new.optimizer.lr, predict.optimizer.lr) == (1e-3, 5e-4)
    predict.unlock().objective.prediction_weight = 0.0
    predict.optimizer.lr, predict.optimizer.start_lr = new.optimizer.lr, new.optimizer.start_lr
    assert predict.to_dict() == new.to_dict()
    assert (
        ijepa.data.global_views == 1 and not ijepa.model.expander_widths and ijepa.model.predictor_depth == 6
    )
    assert ijepa.ema.start == 0.996 and mae.method == "mae" and mae.masks.kind == "random"
    # MAE's AdamW beta2 (0.95) only in the MAE recipe: at the default 0.999 a seed collapsed.
    assert mae.optimizer.b2 == 0.95 and new.optimizer.b2 == ijepa.optimizer.b2 == 0.999
    assert load_config("eurosat_mae", "model=Ti/8").to_dict() == mae.to_dict()
    # The schedule and data are the config's, whatever the recipe.
    for config in (ijepa, mae):
        assert config.total_steps == new.total_steps and config.data.train_split == new.data.train_split
    with pytest.raises(ValueError, match="Unknown recipe"):
        load_config("eurosat", "recipe=simclr")


def test_variant_arguments_are_checked():
    assert load_config("demo", "model=S/8").model.variant == "S/8"
    with pytest.raises(ValueError, match="Did you mean 'runlocal'"):
        load_config("demo", "runlcal")
    with pytest.raises(ValueError, match="source must be"):
        load_config("eurosat", "source=hdf5")


def test_unknown_override_flags_name_the_closest_keys():
    config_lib.check_override_flags(["--config.optimizer.lr=0.1", "--workdir=x"])
    with pytest.raises(ValueError, match="'optimizer.warmup_steps'"):
        config_lib.check_override_flags(["--config.optimizer.warmup_step=3"])
    schema = config_lib.base_config()
    schema.unlock()
    schema.extra_key = 1
    with pytest.raises(ValueError, match="Unknown config key 'extra_key'"):
        config_lib.validate(schema)


@pytest.mark.slow
def test_command_line_trains_and_rejects_unknown_keys(tmp_path):
    command = [sys.executable, "-m", "rejepa_jax.main", "--config", "configs/demo.py:runlocal"]
    done = subprocess.run(
        [
            *command,
            *("--workdir", str(tmp_path), "--config.total_steps=2", "--config.eval.baselines=()"),
            *("--config.log_every_steps=1", "--config.collapse_warning_std=100"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Retrieval at step 2" in done.stdout and "rejepa_target" in done.stdout
    # Every batch std is below 100: the warning comes at the first log step, printed once on the console.
    assert done.stderr.count("is below collapse_warning_std=100") == 1, done.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "2").is_dir()

    bad = subprocess.run(
        [*command, "--workdir", str(tmp_path / "bad"), "--config.data.batch_sze=4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "Unknown config key 'data.batch_sze'" in bad.stderr


def test_config_file_loader_passes_the_argument_and_names_a_missing_file():
    assert config_lib.load_config_file(f"{REPO}/configs/demo.py:model=S/8").model.variant == "S/8"
    assert config_lib.load_config_file(f"{REPO}/configs/demo.py").model.variant == "Ti/8"
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        config_lib.load_config_file("configs/nope.py:runlocal")
