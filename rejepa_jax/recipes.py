"""Named training recipes: the settings that decide how REJEPA learns, shared by the configs.

A config file picks the data, the model size and the schedule length; a recipe sets the objective,
views, masks, predictor, EMA and optimizer on top (`configs/eurosat.py:recipe=ijepa`). The recipes
were compared on the same budgets in benchmarks/BENCHMARKS.md, every setting chosen on the EuroSAT
tuning protocol (archive = train, queries = validation).

- `ijepa`: I-JEPA's recipe (Assran et al., CVPR 2023) with REJEPA's VICReg variance and covariance
  terms on the pooled context embedding: one view per image, 4 target blocks each predicted in its
  own sequence by a 6-block predictor, EMA from 0.996 to 1, descriptor from the target encoder.
  Only the learning rate differs from the reference: its 1e-3 is set for batch 2048, and at batch 64
  2.5e-4 scored higher on validation (P@20 0.559 against 0.522 at 0.1 PFLOP).
- `rejepa`: two augmented global views of each image (random crops, flips and 90-degree rotations;
  colour is left alone, it is signal in remote sensing), each masked as for I-JEPA, with VICReg's
  invariance between the views' pooled context embeddings and variance, covariance and invariance
  acting on VICReg's expander. The latent prediction is off (`objective.prediction_weight = 0`):
  on validation at 0.1 PFLOP the prediction term cost more than it gave (P@20 0.723 without it,
  0.679 predicting one view, 0.606 predicting both), since the EMA target encoder and the predictor
  double a step's FLOPs. Its descriptor is the context encoder's, standardised per dimension.
  Its learning rate, 1e-3, beat 5e-4 on both seeds tried (P@20 0.733 and 0.734 against 0.727 and
  0.721 at 0.1 PFLOP) and 2e-3 (0.727); AdamW's beta2 at 0.95 and a 128-wide expander scored lower.
- `rejepa_predict`: `rejepa` plus the latent prediction of the first view's target blocks by a
  2-block predictor holding all blocks in one sequence, from an EMA target that starts at 0.99 so
  that short runs do not keep a large share of random initialisation in it. It keeps the 5e-4
  learning rate it was measured with.
- `mae`: the pixel-reconstruction baseline, on the same encoder, data and budgets, its learning rate
  and descriptor chosen on validation like the others (lr 1e-3: P@20 0.614 against 0.600 at 2.5e-4;
  standardised: 0.654), and AdamW's beta2 at MAE's own 0.95: at 0.999 one seed of two collapsed near
  the learning-rate peak (standardised P@20 0.665 and 0.512), at 0.95 both trained (0.680 and 0.686).
"""

from __future__ import annotations

from typing import Any

import ml_collections

RECIPES: dict[str, dict[str, Any]] = {
    "ijepa": {
        "data.global_views": 1,
        "data.local_views": 0,
        "data.rotate90": False,
        "model.predictor_depth": 6,
        "model.predictor_joint_targets": False,
        "model.expander_widths": (),
        "objective.prediction_weight": 1.0,
        "objective.variance_weight": 1.0,
        "objective.covariance_weight": 0.04,
        "ema.start": 0.996,
        "eval.encoders": ("target", "context"),
        "optimizer.lr": 2.5e-4,
        "optimizer.start_lr": 5e-5,
    },
    "rejepa": {
        "data.global_views": 2,
        "data.local_views": 0,
        "data.rotate90": True,
        "model.predictor_depth": 2,
        "model.predictor_joint_targets": True,
        "model.expander_widths": (1024, 1024, 256),
        "objective.prediction_weight": 0.0,
        "objective.predicted_views": 1,
        "objective.invariance_weight": 1.0,
        "objective.variance_weight": 1.0,
        "objective.covariance_weight": 0.04,
        "ema.start": 0.99,
        "eval.encoders": ("context", "target"),
        "eval.standardise": True,
        "optimizer.lr": 1e-3,
        "optimizer.start_lr": 2e-4,
    },
    # The MAE baseline (He et al., CVPR 2022) on the same encoder: 75 % of the patches hidden at
    # random, a light decoder (the predictor's settings) reconstructing their normalised pixels.
    "mae": {
        "method": "mae",
        "masks.kind": "random",
        "masks.mask_ratio": 0.75,
        "data.global_views": 1,
        "data.local_views": 0,
        "data.rotate90": False,
        "model.predictor_width": 128,
        "model.predictor_depth": 2,
        "model.predictor_heads": 4,
        "model.predictor_joint_targets": False,
        "model.expander_widths": (),
        "objective.vicreg": False,
        "objective.norm_pix_loss": True,
        "eval.encoders": ("context",),
        "eval.standardise": True,
        "optimizer.lr": 1e-3,
        "optimizer.start_lr": 2e-4,
        "optimizer.b2": 0.95,
    },
}
# The predicting recipe keeps the learning rate it was measured with; its own was never tuned.
RECIPES["rejepa_predict"] = {
    **RECIPES["rejepa"],
    "objective.prediction_weight": 1.0,
    "optimizer.lr": 5e-4,
    "optimizer.start_lr": 1e-4,
}
DEFAULT_RECIPE = "rejepa"


def apply_recipe(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets the recipe's keys on `config` (in place) and returns it; an unknown name is an error."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    for key, value in RECIPES[name].items():
        section, _, leaf = key.rpartition(".")
        target = config
        for part in filter(None, section.split(".")):
            target = target[part]
        target[leaf] = value
    return config
