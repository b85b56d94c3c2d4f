r"""REJEPA on BigEarthNet Sentinel-2 patch folders: 10 or 12 bands, 120 px, patch 15, multi-label retrieval.

Reads the archive as distributed (`BigEarthNet-v1.0/<patch>/<patch>_B02.tif ...`, one GeoTIFF per
band; rejepa_jax/data/bigearthnet.py): the 20 m and 60 m bands are resampled bilinearly to the 10 m
grid (120 px) and stacked. Pretraining uses the official `train` list; retrieval follows CSMAE
(Hackstein et al., "Exploring Masked Autoencoders for Sensor-Agnostic Image Retrieval in Remote
Sensing", 2024; github.com/jakhac/CSMAE, retrieval.py): queries = the `validation` split, archive =
the `test` split. The official lists (bigearthnet-common) already leave out cloudy, shadowed and
snowy patches and those without a 19-class label. A retrieved patch is relevant when it shares a
label with the query.

    python -m rejepa_jax.main --config configs/bigearthnet_s2.py --workdir runs/ben_s2 \
      --config.data.root=/data/BigEarthNet-v1.0

Arguments (`configs/bigearthnet_s2.py:bands=12,labels=43`):
- `bands=10|12`: the 10 m and 20 m bands (default), or all 12 (adds the 60 m B01 and B09);
- `labels=19|43`: BigEarthNet-19 (default) or the original 43 CORINE classes;
- `protocol=official|csmae`: the full official lists, or CSMAE's subset: CSMAE sorts each split
  list and keeps its first `max_img_idx` names. That value is not published; 4,944 per split is
  inferred from the reported BEN-14K size (3 x 4,944 = 14,832), not a published setting;
- `model=<variant>`; `runlocal`: a few steps of a tiny model on the embedded sample patches
  (rejepa_jax/sample_data/bigearthnet: every patch, minus the snowy one, for all three splits).

Sized for an accelerator slice (ViT-B/15, global batch 1024).
"""

from rejepa_jax import config_lib, runlocal
from rejepa_jax.data import bigearthnet

BANDS = {
    10: ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    12: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
}
# Per-band mean and std of BigEarthNet-S2, reflectance x 10,000, published by TU Berlin with
# bigearthnet-models-tf, as shipped in bigearthnet-common 2.8.0 (constants.BAND_STATS_S2).
BAND_MEAN = {
    "B01": 340.76769064,
    "B02": 429.9430203,
    "B03": 614.21682446,
    "B04": 590.23569706,
    "B05": 950.68368468,
    "B06": 1792.46290469,
    "B07": 2075.46795189,
    "B08": 2218.94553375,
    "B8A": 2266.46036911,
    "B09": 2246.0605464,
    "B11": 1594.42694882,
    "B12": 1009.32729131,
}
BAND_STD = {
    "B01": 554.81258967,
    "B02": 572.41639287,
    "B03": 582.87945694,
    "B04": 675.88746967,
    "B05": 729.89827633,
    "B06": 1096.01480586,
    "B07": 1273.45393088,
    "B08": 1365.45589904,
    "B8A": 1356.13789355,
    "B09": 1302.3292881,
    "B11": 1079.19066363,
    "B12": 818.86747235,
}
# CSMAE's per-split subset size, inferred (see the module doc).
CSMAE_SUBSET_PER_SPLIT = 4944


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, model="B/15", bands=10, labels=19, protocol="official", runlocal=False)
    if arg.bands not in BANDS:
        raise ValueError(f"configs/bigearthnet_s2.py: bands must be 10 or 12, got {arg.bands}.")
    if arg.protocol not in ("official", "csmae"):
        raise ValueError(
            f"configs/bigearthnet_s2.py: protocol must be official or csmae, got {arg.protocol!r}."
        )
    bands = BANDS[arg.bands]
    config = config_lib.base_config()
    config.total_steps = 50_000
    config.batch_size = 1024
    config.log_every_steps = 100

    config.model.variant = arg.model
    config.model.dtype = "bfloat16"

    config.data.source = "bigearthnet"
    config.data.train_split = "train"
    config.data.archive_split = "test"
    config.data.query_split = "validation"
    config.data.bigearthnet.bands = bands
    config.data.bigearthnet.labels = arg.labels
    if arg.protocol == "csmae":
        config.data.bigearthnet.subset_per_split = CSMAE_SUBSET_PER_SPLIT
    config.data.image_size = 120
    config.data.channels = len(bands)
    config.data.num_classes = arg.labels
    config.data.multi_label = True
    config.data.mean = tuple(BAND_MEAN[b] for b in bands)
    config.data.std = tuple(BAND_STD[b] for b in bands)
    config.data.num_workers = 8
    config.data.num_threads = 8

    # 120 px / patch 15 is an 8 x 8 grid. There I-JEPA's 4 targets of 15-20 % leave a context of 16
    # of the 64 tokens (the sampler's automatic size, rejepa_jax/masking.py); 3 targets of 10-20 %
    # leave 22.
    config.masks.num_targets = 3
    config.masks.target_scale = (0.1, 0.2)
    config.optimizer.warmup_steps = 2_500
    config.checkpoint.every_steps = 2_000
    config.eval.every_steps = 10_000
    config.eval.batch_size = 1024
    config.eval.baselines = ("color_histogram", "random_init")
    # Bands of very different scales: histogram each band's z-score (retrieval/color_histogram.py).
    config.eval.histogram_space = "standardised"
    # Pictures in true colour (B04, B03, B02), one linear stretch of 0-0.2 surface reflectance shared
    # by the three bands and clipped: the usual range of Sentinel-2 L2A true-colour renderings.
    config.eval.display_bands = tuple(bands.index(b) for b in ("B04", "B03", "B02"))
    config.eval.display_range = (0.0, 2000.0)

    if arg.runlocal:
        config.data.root = str(bigearthnet.SAMPLE_DIR / "BigEarthNet-S2-Example")
        config.data.train_split = config.data.archive_split = config.data.query_split = "all"
        config.data.bigearthnet.subset_per_split = 0
        config.data.num_threads = 2
        config.model.variant = "Ti/15"
        config.model.dtype = "float32"
        runlocal.shrink(
            config,
            steps=3,
            batch_size=8,
            eval_batch_size=8,
            checkpoint_every_steps=3,
            log_every_steps=1,
            warmup_steps=1,
        )
    config.lock()
    return config
