r"""Demo: REJEPA on the embedded EuroSAT RGB sample (800 archive + 200 query images), 2 CPU cores.

    python -m rejepa_jax.main --config configs/demo.py --workdir /tmp/rejepa_demo

Trains a ViT-Tiny/8 at 64 px without labels on the archive split, then prints P@K and mAP@K of
the query split against the archive for the target- and context-encoder descriptors, beside a
colour-histogram and a random-init baseline computed the same way. About 8 minutes on 2 CPU cores.

Arguments: `runlocal` (a few steps of a tiny model, for tests), `model=<variant>` (e.g. `S/8`).
"""

from rejepa_jax import config_lib


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, runlocal=False, model="Ti/8")
    config = config_lib.base_config()
    config.total_steps = 400
    config.batch_size = 64
    config.log_every_steps = 20

    config.model.variant = arg.model
    config.model.predictor_width = 192
    config.model.predictor_depth = 6

    config.data.source = "folder"
    config.data.root = config_lib.SAMPLE_ROOT
    config.data.train_split = "archive.csv"
    config.data.query_split = "query.csv"
    config.data.archive_split = "archive.csv"
    config.data.image_size = 64
    config.data.num_threads = 2

    config.masks.num_targets = 4

    config.optimizer.warmup_steps = 40
    config.checkpoint.every_steps = 100
    config.eval.ks = (5, 10, 20, 50)
    config.eval.baselines = ("color_histogram", "random_init")

    if arg.runlocal:
        config.total_steps = 6
        config.batch_size = 16
        config.log_every_steps = 2
        config.model.depth = 2
        config.model.predictor_width = 96
        config.model.predictor_depth = 1
        config.optimizer.warmup_steps = 2
        config.checkpoint.every_steps = 3
        config.eval.batch_size = 64
    config.lock()
    return config
