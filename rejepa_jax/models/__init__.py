"""Flax Linen modules: the ViT encoder and the narrow JEPA predictor."""
