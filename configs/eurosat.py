r"""REJEPA on full EuroSAT RGB (27,000 Sentinel-2 scenes, 64 px, 10 classes).

From a folder with the split CSVs (archive = train + validation, queries = test):

    python -m rejepa_jax.main --config configs/eurosat.py --workdir runs/eurosat \
      --config.data.root=../shared/data/eurosat_rgb \
      --config.data.split_dir=../shared/data/eurosat_rgb_meta

From the tfds catalog (`eurosat/rgb`, one `train` split: the last 10 % serve as queries):

    python -m rejepa_jax.main --config configs/eurosat.py:source=tfds --workdir runs/eurosat_tfds \
      --config.data.tfds_data_dir=~/tensorflow_datasets

Arguments: `source=folder|tfds`, `model=<variant>`, `runlocal` (a few steps of a tiny model on the
embedded sample, for tests).
"""

from rejepa_jax import config_lib


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, source="folder", model="S/8", runlocal=False)
    config = config_lib.base_config()
    config.total_steps = 19_000  # About 100 epochs of the 24,300-image archive at batch 128.
    config.batch_size = 128
    config.log_every_steps = 50

    config.model.variant = arg.model
    config.model.predictor_width = 192
    config.model.predictor_depth = 6

    config.data.image_size = 64
    config.data.num_workers = 2
    config.data.num_classes = 10
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

    config.optimizer.warmup_steps = 1_500
    config.checkpoint.every_steps = 1_000
    config.eval.every_steps = 5_000
    config.eval.batch_size = 256
    config.eval.baselines = ("color_histogram", "random_init")

    if arg.runlocal:
        if arg.source == "folder":
            config.data.root = config_lib.SAMPLE_ROOT
            config.data.train_split = config.data.archive_split = "archive.csv"
            config.data.query_split = "query.csv"
        config.total_steps = 4
        config.batch_size = 16
        config.log_every_steps = 2
        config.model.variant = "Ti/8"
        config.model.depth = 2
        config.model.predictor_width = 96
        config.model.predictor_depth = 1
        config.data.num_workers = 0
        config.optimizer.warmup_steps = 2
        config.checkpoint.every_steps = 2
        config.eval.every_steps = 0
        config.eval.batch_size = 64
        config.eval.baselines = ()
    config.lock()
    return config
