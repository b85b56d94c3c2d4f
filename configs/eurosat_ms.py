r"""REJEPA on EuroSAT-MS: 13-band Sentinel-2 GeoTIFFs (64 px, 10 classes), or a band subset.

    python -m rejepa_jax.main --config configs/eurosat_ms.py --workdir runs/eurosat_ms \
      --config.data.root=/data/eurosat_ms

`data.split_dir` defaults to this repository's benchmarks/eurosat_ms_splits as an absolute path, so it
may be left out; a relative split_dir is read relative to data.root, not to the working directory.
The splits (benchmarks/eurosat_ms_splits.py) follow the EuroSAT RGB protocol through each file's RGB
namesake: archive = train + validation (archive.csv), queries = test (query.csv); for tuning, pass
`--config.data.train_split=tune_archive.csv --config.data.archive_split=tune_archive.csv
--config.data.query_split=tune_query.csv`.
ViT-Ti/8 at 64 px and the default recipe, as configs/eurosat.py; only the patch embedding sees the
band count.

Band order inside the files (checked on 469 public files, see BAND_NAMES): B01-B08, B09, B10,
B11, B12, B8A, i.e. B8A is last, not between B08 and B09.

Arguments: `bands=all|rgb|10` (13 bands; B04, B03, B02; the ten 10 m / 20 m bands B02, B03, B04, B05,
B06, B07, B08, B8A, B11, B12), `model=<variant>`, `recipe=rejepa|rejepa_predict|ijepa|mae`,
`runlocal` (a few steps of a tiny model on the 20 files embedded in rejepa_jax/sample_data/eurosat_ms).
"""

from pathlib import Path

from rejepa_jax import config_lib, recipes, runlocal

SAMPLE_ROOT = str(Path(config_lib.__file__).resolve().parent / "sample_data" / "eurosat_ms")
SPLIT_DIR = str(Path(__file__).resolve().parent.parent / "benchmarks" / "eurosat_ms_splits")

# Band of each of the 13 planes of a EuroSAT-MS GeoTIFF. B8A (865 nm) is stored last: plane 12
# correlates 0.98-1.00 with B06, B07 and B08 (740-842 nm) over 469 public files, plane 9 is the
# near-zero cirrus band B10 (mean 12) and plane 8 the water-vapour band B09 (mean 742, correlation 0.76).
BAND_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
BAND_SETS = {
    "all": BAND_NAMES,
    "rgb": ("B04", "B03", "B02"),
    "10": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
}
TRUE_COLOUR = ("B04", "B03", "B02")

# Per-band mean and std of 469 public files (all splits), in raw units (TOA reflectance x 10,000):
#   python -m rejepa_jax.stats --config configs/eurosat_ms.py \
#     --config.data.root=/data/eurosat_ms --config.data.train_split=
# (the archive split alone differs by < 1 %).
MEAN = (
    1351.433, 1117.770, 1047.753, 950.253, 1206.936, 2014.261, 2387.061,
    2314.939, 742.024, 12.101, 1838.781, 1136.819, 2609.976,
)  # fmt: skip
STD = (
    239.701, 332.129, 395.506, 590.722, 559.521, 859.730, 1087.578,
    1121.100, 414.618, 4.430, 1008.745, 768.362, 1229.725,
)  # fmt: skip

# True-colour pictures: B04, B03, B02 mapped linearly from 0-0.275 TOA reflectance to 0-1, one range
# for the three bands, clipped. It is the stretch the EuroSAT RGB JPEGs were made with: a least-squares
# fit of the JPEG values on B04, B03, B02 of the 469 namesakes puts 0 at -25..-2 and 255 at
# 2,737..2,779 (r >= 0.995 per band), so the pictures look like the RGB set. On these files it clips
# about 0.7 % of the values at the top (pooled percentiles of the three bands: 2 % 339, 50 % 968,
# 98 % 2,238, 99.5 % 2,922).
DISPLAY_RANGE = (0.0, 2750.0)

# About 60 passes over the 424 archive images at batch 64 (0.03 PFLOP): 13 minutes with the final
# evaluation on a 2-core CPU (2026-12-04, /work/runs/eurosat_ms).
TOTAL_STEPS = 400


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, bands="all", model="Ti/8", recipe=recipes.DEFAULT_RECIPE, runlocal=False)
    if arg.bands not in BAND_SETS:
        raise ValueError(
            f"configs/eurosat_ms.py: bands must be one of {sorted(BAND_SETS)}, got {arg.bands!r}."
        )
    names = BAND_SETS[arg.bands]
    bands = tuple(BAND_NAMES.index(name) for name in names)

    config = config_lib.base_config()
    config.total_steps = TOTAL_STEPS
    config.log_every_steps = 20

    config.model.variant = arg.model
    config.model.predictor_width = 192
    config.data.split_dir = SPLIT_DIR
    config.data.train_split = "archive.csv"
    config.data.archive_split = "archive.csv"
    config.data.query_split = "query.csv"
    config.data.num_workers = 2
    config.data.bands = bands
    config.data.channels = len(bands)
    config.data.mean = tuple(MEAN[b] for b in bands)
    config.data.std = tuple(STD[b] for b in bands)

    config.optimizer.warmup_steps = TOTAL_STEPS // 15
    config.checkpoint.every_steps = 100
    config.eval.batch_size = 64
    config.eval.ks = (5, 10, 20, 50)
    config.eval.baselines = ("color_histogram", "random_init")
    config.eval.histogram_space = "standardised"
    config.eval.display_bands = tuple(names.index(name) for name in TRUE_COLOUR)
    config.eval.display_range = DISPLAY_RANGE
    recipes.apply_recipe(config, arg.recipe)

    if arg.runlocal:
        config.data.root = SAMPLE_ROOT
        config.data.split_dir = ""
        runlocal.shrink(
            config,
            steps=4,
            batch_size=16,
            eval_batch_size=16,
            checkpoint_every_steps=2,
            baselines=("color_histogram",),
        )
        config.eval.ks = (5, 10)
    config.lock()
    return config
