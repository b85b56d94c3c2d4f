r"""REJEPA on full EuroSAT RGB (27,000 Sentinel-2 scenes, 64 px, 10 classes).

From a folder with the split CSVs (archive = train + validation, queries = test; a relative
`data.split_dir` is read from `data.root`, an absolute one as is):

    python -m rejepa_jax.main --config configs/eurosat.py --workdir runs/eurosat \
      --config.data.root=/data/eurosat_rgb \
      --config.data.split_dir=/data/eurosat_rgb_meta

From the tfds catalog (`eurosat/rgb`, one `train` split: the last 10 % serve as queries):

    python -m rejepa_jax.main --config configs/eurosat.py:source=tfds --workdir runs/eurosat_tfds \
      --config.data.tfds_data_dir=~/tensorflow_datasets

The defaults are those of benchmarks/BENCHMARKS.md: ViT-Ti/8, batch 64, the `rejepa` recipe
(rejepa_jax/recipes.py), TOTAL_STEPS steps (about 1e15 training FLOPs for that recipe).

Arguments: `source=folder|tfds`, `model=<variant>`, `recipe=rejepa|rejepa_predict|ijepa|mae`
(`rejepa_predict` adds the latent prediction; `ijepa` is I-JEPA's recipe with REJEPA's VICReg
terms; `mae` the pixel-reconstruction baseline), `runlocal` (a few steps of a tiny model on the
embedded sample, for tests).
"""

from rejepa_jax import config_lib, recipes, runlocal

# Steps of the default recipe at batch 64 that spend about 1 PFLOP (XLA counts 1.10 GFLOP per image
# per step for ViT-Ti/8 at 64 px).
TOTAL_STEPS = 14_000


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(
        arg, source="folder", model="Ti/8", recipe=recipes.DEFAULT_RECIPE, runlocal=False
    )
    config = config_lib.base_config()
    config.total_steps = TOTAL_STEPS

    config.model.variant = arg.model
    config.model.predictor_width = 192
    config.data.num_workers = 2
    if arg.source == "folder":
        config.data.source = "folder"
        config.data.train_split = "train.csv,validation.csv"
        config.data.archive_split = "train.csv,validation.csv"
        config.data.query_split = "test.csv"
    elif arg.source == "tfds":
        config.data.source = "tfds"
        config.data.tfds_name = "eurosat/rgb"
        config.data.train_split = "train[:90%]"
        config.data.archive_split = "train[:90%]"
        config.data.query_split = "train[90%:]"
    else:
        raise ValueError(f"configs/eurosat.py: source must be 'folder' or 'tfds', got {arg.source!r}.")

    config.optimizer.warmup_steps = TOTAL_STEPS // 15
    config.checkpoint.every_steps = 250
    config.eval.batch_size = 256
    config.eval.baselines = ("color_histogram", "random_init")
    recipes.apply_recipe(config, arg.recipe)

    if arg.runlocal:
        if arg.source == "folder":
            config.data.root = config_lib.SAMPLE_ROOT
            config.data.train_split = config.data.archive_split = "archive.csv"
            config.data.query_split = "query.csv"
        config.model.variant = "Ti/8"
        runlocal.shrink(config, steps=4, batch_size=16, eval_batch_size=64, checkpoint_every_steps=2)
    config.lock()
    return config
