r"""REJEPA on BigEarthNet Sentinel-1 patch folders: VV and VH backscatter (dB), 120 px, patch 15.

Reads the archive as distributed (`BigEarthNet-S1-v1.0/<patch>/<patch>_VV.tif, _VH.tif`;
rejepa_jax/data/bigearthnet.py). The split lists name Sentinel-2 patches; each S1 patch folder is
matched to its S2 partner (bigearthnet-common's pairing), so an S1 split holds the places of the S2
split, in the same order, and an S1 patch is left out when its S2 partner is (clouds, shadows,
seasonal snow). Pretraining uses the official `train` list; retrieval follows CSMAE (Hackstein et
al., "Exploring Masked Autoencoders for Sensor-Agnostic Image Retrieval in Remote Sensing", 2024;
github.com/jakhac/CSMAE, retrieval.py): queries = the `validation` split, archive = the `test`
split. A retrieved patch is relevant when it shares a label with the query.

    python -m rejepa_jax.main --config configs/bigearthnet_s1.py --workdir runs/ben_s1 \
      --config.data.root=/data/BigEarthNet-S1-v1.0

Arguments: `labels=19|43`; `protocol=official|csmae` (CSMAE sorts each split list and keeps its
first `max_img_idx` names; that value is not published, and 4,944 per split is inferred from the
reported BEN-14K size, 3 x 4,944 = 14,832, not a published setting); `model=<variant>`;
`runlocal`: a few steps of a tiny model on the embedded sample patches
(rejepa_jax/sample_data/bigearthnet: every patch, minus the snowy one, for all three splits).

Sized for an accelerator slice (ViT-B/15, global batch 1024).
"""

from rejepa_jax import config_lib, runlocal
from rejepa_jax.data import bigearthnet

BANDS = ("VV", "VH")
# Per-band mean and std of BigEarthNet-S1 backscatter in dB, as shipped in bigearthnet-common 2.8.0
# (constants.BAND_STATS_S1).
BAND_MEAN = {"VV": -12.619993741972035, "VH": -19.29044597721542}
BAND_STD = {"VV": 5.115911777546365, "VH": 5.464428464912864}
# CSMAE's per-split subset size, inferred (see the module doc).
CSMAE_SUBSET_PER_SPLIT = 4944


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, model="B/15", labels=19, protocol="official", runlocal=False)
    if arg.protocol not in ("official", "csmae"):
        raise ValueError(
            f"configs/bigearthnet_s1.py: protocol must be official or csmae, got {arg.protocol!r}."
        )
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
    config.data.bigearthnet.sensor = "s1"
    config.data.bigearthnet.bands = BANDS
    config.data.bigearthnet.labels = arg.labels
    if arg.protocol == "csmae":
        config.data.bigearthnet.subset_per_split = CSMAE_SUBSET_PER_SPLIT
    config.data.image_size = 120
    config.data.channels = len(BANDS)
    config.data.num_classes = arg.labels
    config.data.multi_label = True
    config.data.mean = tuple(BAND_MEAN[b] for b in BANDS)
    config.data.std = tuple(BAND_STD[b] for b in BANDS)
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
    # dB values far from 0..255: histogram each band's z-score (rejepa_jax/retrieval/color_histogram.py).
    config.eval.histogram_space = "standardised"
    # Pictures show VV backscatter in grey, linearly from -25 dB (black) to 0 dB (white), clipped.
    config.eval.display_bands = (0,)
    config.eval.display_range = (-25.0, 0.0)

    if arg.runlocal:
        config.data.root = str(bigearthnet.SAMPLE_DIR / "BigEarthNet-S1-Example")
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
