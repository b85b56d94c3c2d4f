"""Entry point: `python -m rejepa_jax.main --config configs/<name>.py[:args] --workdir DIR`.

Trains REJEPA (or resumes the run already in DIR), evaluates retrieval and prints the table.
Override any config key with `--config.section.key=value`; an unknown key is an error that names
the closest valid keys.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from rejepa_jax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally ':args'.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, TensorBoard, config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.info("Config:\n%s", _CONFIG.value)
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
