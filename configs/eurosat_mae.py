r"""The MAE baseline on EuroSAT RGB: the same encoder, data and schedule as configs/eurosat.py, but
pixel reconstruction with a light decoder instead of latent prediction.

    python -m rejepa_jax.main --config configs/eurosat_mae.py --workdir runs/eurosat_mae \
      --config.data.root=../shared/data/eurosat_rgb \
      --config.data.split_dir=../shared/data/eurosat_rgb_meta

75 % of the patches are hidden at random; the encoder sees the rest; the decoder (the
`model.predictor_*` settings) predicts the per-patch normalised pixels of the hidden patches, with
a mean squared error. The retrieval descriptor is the mean-pooled encoder output (`eval.encoders`
is the online encoder; MAE has no EMA target). Arguments as configs/eurosat.py.
"""

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("eurosat_config", Path(__file__).with_name("eurosat.py"))
_EUROSAT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_EUROSAT)


def get_config(arg: str | None = None):
    config = _EUROSAT.get_config(arg)
    config.method = "mae"
    config.masks.kind = "random"
    config.masks.mask_ratio = 0.75
    config.objective.vicreg = False
    config.objective.norm_pix_loss = True
    # A light decoder, as in MAE: narrower and shallower than the encoder it serves.
    config.model.predictor_width = 128
    config.model.predictor_depth = 2
    config.model.predictor_heads = 4
    config.eval.encoders = ("context",)
    return config
