"""Entry point: `python -m rejepa_jax.main --config configs/<name>.py[:args] --workdir DIR`.

Trains REJEPA (or resumes the run already in DIR), evaluates retrieval and prints the table.
Override any config key with `--config.section.key=value`; an unknown key is an error that names
the closest valid keys.
"""

from __future__ import annotations

import logging as python_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rejepa_jax import config_lib, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally ':args'.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, TensorBoard, config.json.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraryInfo(python_logging.Filter):
    """Drops INFO chatter of Orbax and Grain (every save and restore); keeps their warnings."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in ("/orbax/", "/grain/", "/jax/_src/"))
        return record.levelno >= python_logging.WARNING or not noisy


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    logging.info("Config:\n%s", _CONFIG.value)
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run() -> None:
    """Console-script entry point (`rejepa-train`)."""
    try:
        config_lib.check_override_flags(sys.argv[1:])
    except ValueError as error:
        sys.exit(f"error: {error}")
    app.run(main)


if __name__ == "__main__":
    run()
