"""Entry point: `python -m rejepa_jax.main --config configs/<name>.py[:args] --workdir DIR`.

Trains REJEPA (or resumes the run already in DIR), evaluates retrieval and prints the table.
Override any config key with `--config.section.key=value`; an unknown key is an error that names
the closest valid keys.

Multiple hosts: see `rejepa_jax.distributed` (automatic on TPU pods and SLURM; explicit
`--coordinator_address`, `--num_processes`, `--process_id` elsewhere). `--dry_run` compiles the
train step for the configured mesh (on that many fake CPU devices when no accelerator is present)
and prints its cost.
"""

from __future__ import annotations

import sys

from rejepa_jax import preemption

# Before the slow imports below: from here on a SIGTERM only sets a flag, so one that arrives during
# start-up ends the run cleanly (exit 0, checkpoints untouched) instead of killing it.
preemption.install()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rejepa_jax import checkpoint, cli, config_lib, cost_report, distributed, trainer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally ':args'.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, TensorBoard, config.json.")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Compile the train step and print its cost; do not train.")
_DRY_RUN_DEVICES = flags.DEFINE_integer(
    "dry_run_devices", 8, "Fake CPU devices for --dry_run when no accelerator is present."
)
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_library_info()
    if not _DRY_RUN.value and not _WORKDIR.value:
        raise app.UsageError("--workdir is required (except with --dry_run).")
    if _DRY_RUN.value:
        if preemption.requested():
            print("Stopped by SIGTERM during start-up; nothing was compiled.", flush=True)
            return
        preemption.uninstall()  # Nothing to save: from now on a SIGTERM ends a dry run at once.
        # Only the CPU backend reads this; on an accelerator host the real devices are used.
        jax.config.update("jax_num_cpu_devices", _DRY_RUN_DEVICES.value)
    distributed.initialize()
    logging.info("Config:\n%s", _CONFIG.value)

    if _DRY_RUN.value:
        print(cost_report.format_report(cost_report.compile_cost(_CONFIG.value)), flush=True)
        return
    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except checkpoint.NoUsableCheckpointError as error:
        sys.exit(f"error: {error}")


def run() -> None:
    """Console-script entry point (`rejepa-train`)."""
    try:
        config_lib.check_override_flags(sys.argv[1:])
    except ValueError as error:
        sys.exit(f"error: {error}")
    cli.run(main)


if __name__ == "__main__":
    run()
