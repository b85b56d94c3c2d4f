"""Input pipeline: data sources, image decoding, numpy augmentations and the grain pipelines.

The flow is `sources` (records naming or holding an image) -> `decode` (float32 [H, W, C] in raw
pixel units, reading files with `image_formats` and resampling band files with `band_resampling`)
-> `record_transforms` (per-record maps using `augment`: crop, flip, normalise, masks) -> `pipeline`
(grain datasets, bad records dropped by `bad_records`, eval padding by `stream_padding`, batches).
Errors are the `DataError` types of `errors`.
"""
