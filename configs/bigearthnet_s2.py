r"""REJEPA on BigEarthNet Sentinel-2: 12 bands, 120 px, patch 15, multi-label retrieval.

Reads the tfds catalog dataset `bigearthnet/all` (prepare it once with tfds; it has one `train`
split, of which the last 5 % serve as queries). The 12 bands B01-B12 and B8A (no B10) are
resampled to 120 px and stacked; labels are the 43-class multi-hot CORINE labels. A retrieved image
is relevant when it shares at least one label with the query.

    python -m rejepa_jax.main --config configs/bigearthnet_s2.py --workdir runs/ben_s2 \
      --config.data.tfds_data_dir=/mnt/shared/tensorflow_datasets

Sized for an accelerator slice (ViT-B/15, global batch 1024). `runlocal` runs a few steps of a tiny
model on synthetic 12-band 120 px images, for tests.
"""

from rejepa_jax import config_lib

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, model="B/15", runlocal=False)
    config = config_lib.base_config()
    config.total_steps = 50_000
    config.batch_size = 1024
    config.log_every_steps = 100

    config.model.variant = arg.model
    config.model.dtype = "bfloat16"
    config.model.predictor_width = 384
    config.model.predictor_depth = 6

    config.data.source = "tfds"
    config.data.tfds_name = "bigearthnet/all"
    config.data.image_key = ",".join(S2_BANDS)
    config.data.label_key = "labels"
    config.data.train_split = "train[:95%]"
    config.data.archive_split = "train[:95%]"
    config.data.query_split = "train[95%:]"
    config.data.image_size = 120
    config.data.channels = len(S2_BANDS)
    config.data.num_classes = 43
    config.data.multi_label = True
    # Per-band statistics published with BigEarthNet (TU Berlin, bigearthnet-models-tf), raw units.
    config.data.mean = (
        340.8,
        429.9,
        614.2,
        590.2,
        950.7,
        1792.5,
        2075.5,
        2218.9,
        2266.5,
        2246.1,
        1594.4,
        1009.3,
    )
    config.data.std = (
        554.8,
        572.4,
        582.9,
        675.9,
        729.9,
        1096.0,
        1273.5,
        1365.5,
        1356.1,
        1302.3,
        1079.2,
        818.9,
    )
    config.data.flip_vertical = True
    config.data.num_workers = 8
    config.data.num_threads = 8

    # An 8x8 grid: I-JEPA's block scales leave too few context tokens (METHOD.md §1.5).
    config.masks.num_targets = 3
    config.masks.target_scale = (0.1, 0.2)

    config.optimizer.lr = 1e-3
    config.optimizer.warmup_steps = 2_500
    config.mesh.data = -1
    config.checkpoint.every_steps = 2_000
    config.eval.every_steps = 10_000
    config.eval.ks = (5, 10, 20, 100)
    config.eval.batch_size = 1024
    config.eval.baselines = ("color_histogram", "random_init")

    if arg.runlocal:
        config_lib.shrink_to_synthetic_runlocal(config, variant="Ti/15", steps=3, batch_size=8)
        config.data.mean = (127.5,) * len(S2_BANDS)
        config.data.std = (64.0,) * len(S2_BANDS)
    config.lock()
    return config
