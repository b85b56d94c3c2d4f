"""Entry point: `python -m rejepa_jax.main --config configs/<name>.py[:args] --workdir DIR`.

Trains REJEPA (or resumes the run already in DIR), evaluates retrieval and prints the table.
Override any config key with `--config.section.key=value`; an unknown key is an error that names
the closest valid keys.

Multiple hosts: on Cloud TPU pods and SLURM jobs `jax.distributed.initialize()` finds its
coordinator by itself; elsewhere pass `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` to every process. `--dry_run` compiles the train step for the configured mesh
(on that many fake CPU devices when no accelerator is present) and prints its cost.
"""

from __future__ import annotations

import logging as python_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rejepa_jax import config_lib, cost_report, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally ':args'.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, TensorBoard, config.json.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for local multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (with --coordinator_address)."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "auto: initialise jax.distributed with the flags above, or on a multi-host TPU / SLURM job.",
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Compile the train step and print its cost; do not train.")
_DRY_RUN_DEVICES = flags.DEFINE_integer(
    "dry_run_devices", 8, "Fake CPU devices for --dry_run when no accelerator is present."
)
flags.mark_flag_as_required("config")


class _QuietLibraryInfo(python_logging.Filter):
    """Drops INFO chatter of Orbax, Grain and JAX internals (every save, restore, compile)."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in ("/orbax/", "/grain/", "/jax/_src/"))
        return record.levelno >= python_logging.WARNING or not noisy


def _cluster_detected() -> bool:
    """A multi-process SLURM job or a multi-worker Cloud TPU slice."""
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    tpu_workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm_tasks > 1 or "," in tpu_workers


def initialize_distributed() -> None:
    """Starts jax.distributed when asked or when a cluster is detected (before any device use)."""
    explicit = _COORDINATOR.value is not None
    if _DISTRIBUTED.value == "off" or (
        _DISTRIBUTED.value == "auto" and not explicit and not _cluster_detected()
    ):
        return
    # CPU processes exchange collectives through gloo; accelerators use their own transport.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # SIGTERM is handled by rejepa_jax.preemption, which makes all hosts stop after the same step.
    jax.config.update("jax_enable_preemption_service", False)
    if explicit:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    else:
        jax.distributed.initialize()
    logging.info("Process %d of %d started.", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    if not _DRY_RUN.value and not _WORKDIR.value:
        raise app.UsageError("--workdir is required (except with --dry_run).")
    if _DRY_RUN.value:
        # Only the CPU backend reads this; on an accelerator host the real devices are used.
        jax.config.update("jax_num_cpu_devices", _DRY_RUN_DEVICES.value)
    initialize_distributed()
    logging.info("Config:\n%s", _CONFIG.value)

    if _DRY_RUN.value:
        print(cost_report.format_report(cost_report.compile_cost(_CONFIG.value)), flush=True)
        return
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
