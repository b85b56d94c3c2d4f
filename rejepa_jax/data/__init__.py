"""Input pipeline: data sources, image decoding, numpy augmentations and the grain pipelines.

The flow is `sources` (records naming or holding an image) -> `decode` (float32 [H, W, C] in raw
pixel units) -> `augment` (crop, flip, normalise) -> `pipeline` (grain datasets, masks, batches).
"""
