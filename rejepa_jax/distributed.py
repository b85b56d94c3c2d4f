"""Multi-process start-up shared by every command (train, export, evaluate).

On Cloud TPU pods and SLURM jobs `jax.distributed.initialize()` finds its coordinator by itself;
elsewhere pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` to every process.
"""

from __future__ import annotations

import os

import jax
from absl import flags, logging

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


def cluster_detected() -> bool:
    """A multi-process SLURM job or a multi-worker Cloud TPU slice."""
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    tpu_workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm_tasks > 1 or "," in tpu_workers


def initialize() -> None:
    """Starts jax.distributed when asked or when a cluster is detected (before any device use)."""
    explicit = _COORDINATOR.value is not None
    wanted = _DISTRIBUTED.value == "on" or (_DISTRIBUTED.value == "auto" and (explicit or cluster_detected()))
    if not wanted:
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
