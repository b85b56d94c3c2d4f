r"""REJEPA on fMoW-RGB: 224 px RGB crops, ViT-L/16, for a TPU pod slice or a multi-GPU host.

fMoW is not in the tfds catalog: convert the extracted crops (one folder per category) into an
ArrayRecord tfds dataset once, then train from it with random access:

    python -m rejepa_jax.prepare --root /data/fmow_rgb --out /mnt/shared/tfds --name fmow_rgb \
      --split train=train.csv --split val=val.csv
    python -m rejepa_jax.main --config configs/fmow_rgb.py --workdir /mnt/shared/runs/fmow \
      --config.data.tfds_data_dir=/mnt/shared/tfds

The workdir and the data must be visible to every host (NFS, or a gcsfuse-mounted bucket). On a
pod, `launch/tpu_vm.sh` runs the same command on all workers. Check the per-device memory for your
slice first with `--dry_run --dry_run_devices=<chips>`.

Queries are the `val` split, the archive is `train`. `runlocal` runs a few steps of a tiny model
on synthetic 224 px images, for tests.
"""

from rejepa_jax import config_lib, runlocal


def get_config(arg: str | None = None):
    arg = config_lib.parse_arg(arg, model="L/16", runlocal=False)
    config = config_lib.base_config()
    config.total_steps = 100_000
    config.batch_size = 2048
    config.log_every_steps = 100

    config.model.variant = arg.model
    config.model.dtype = "bfloat16"
    config.model.remat = True
    config.model.predictor_depth = 12

    config.data.source = "tfds"
    config.data.tfds_name = "fmow_rgb"
    config.data.train_split = "train"
    config.data.archive_split = "train"
    config.data.query_split = "val"
    config.data.image_size = 224
    config.data.num_classes = 62
    # ImageNet statistics in 0-255 units; recompute with `python -m rejepa_jax.stats`.
    config.data.mean = (123.7, 116.3, 103.5)
    config.data.std = (58.4, 57.1, 57.4)
    config.data.num_workers = 16
    config.data.num_threads = 16
    config.optimizer.warmup_steps = 10_000
    config.checkpoint.every_steps = 2_500
    config.eval.every_steps = 10_000
    config.eval.batch_size = 1024
    config.eval.baselines = ("color_histogram", "random_init")

    if arg.runlocal:
        runlocal.shrink_to_synthetic(config, variant="Ti/16", steps=2, batch_size=8)
    config.lock()
    return config
