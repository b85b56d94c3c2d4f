r"""The MAE baseline on EuroSAT RGB: configs/eurosat.py with `recipe=mae`.

    python -m rejepa_jax.main --config configs/eurosat_mae.py --workdir runs/eurosat_mae \
      --config.data.root=/data/eurosat_rgb \
      --config.data.split_dir=/data/eurosat_rgb_meta

The same encoder, data and schedule as configs/eurosat.py, but pixel reconstruction with a light
decoder instead of latent prediction: 75 % of the patches are hidden at random, the encoder sees
the rest, and the decoder (the `model.predictor_*` settings) predicts the per-patch normalised
pixels of the hidden patches with a mean squared error. The retrieval descriptor is the mean-pooled
encoder output (MAE has no EMA target). Arguments as configs/eurosat.py (`recipe` is fixed).
"""

from pathlib import Path

from rejepa_jax import config_lib

_EUROSAT = Path(__file__).with_name("eurosat.py")


def get_config(arg: str | None = None):
    if arg and "recipe=" in arg:
        raise ValueError("configs/eurosat_mae.py is configs/eurosat.py:recipe=mae; do not pass a recipe.")
    return config_lib.load_config_file(f"{_EUROSAT}:{arg},recipe=mae" if arg else f"{_EUROSAT}:recipe=mae")
