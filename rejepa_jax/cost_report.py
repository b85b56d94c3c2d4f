"""What a configured train step costs, known before booking a pod: `main --dry_run`.

Lowers and compiles the real train step for the configured mesh (the same jit, shardings and
donation as training) on abstract inputs, then reads XLA's own figures:
- FLOPs from `cost_analysis()` of the compiled, partitioned program (per device), scaled to the
  whole step and per image;
- parameter and optimizer-state bytes held per device under the sharding rules;
- the compiled per-device memory: arguments, outputs, temporaries and their sum minus donated
  (aliased) buffers as the peak estimate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from rejepa_jax import run_setup, trainer


@dataclasses.dataclass(frozen=True)
class CostReport:
    """Per-step cost of one config on one mesh."""

    mesh: dict[str, int]
    platform: str
    global_batch: int
    flops_per_device: float
    param_count: int
    param_bytes_per_device: int
    target_bytes_per_device: int
    optimizer_bytes_per_device: int
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int

    @property
    def num_devices(self) -> int:
        return math.prod(self.mesh.values())

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_device * self.num_devices

    @property
    def flops_per_image(self) -> float:
        return self.flops_per_step / self.global_batch

    @property
    def peak_bytes_per_device(self) -> int:
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes


def _bytes_per_device(abstract: Any) -> int:
    """Bytes of one device's shards of every leaf (ShapeDtypeStructs carrying shardings)."""
    total = 0
    for leaf in jax.tree.leaves(abstract):
        shard = leaf.sharding.shard_shape(leaf.shape) if leaf.shape else ()
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
    return total


def compile_cost(config: ml_collections.ConfigDict) -> CostReport:
    """Compiles the train step exactly as training would and collects its cost."""
    run = run_setup.build_run(config)
    step = trainer.jit_train_step(config, run)
    with jax.set_mesh(run.mesh):
        compiled = step.lower(run.abstract_state, run.batch).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # Older JAX returns one dict per program.
        cost = cost[0]
    memory = compiled.memory_analysis()
    state = run.abstract_state
    return CostReport(
        mesh=dict(run.mesh.shape),
        platform=run.mesh.devices.flat[0].platform,
        global_batch=config.batch_size,
        flops_per_device=float(cost.get("flops", 0.0)),
        param_count=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params)),
        param_bytes_per_device=_bytes_per_device(state.params),
        target_bytes_per_device=_bytes_per_device(state.target_encoder),
        optimizer_bytes_per_device=_bytes_per_device(state.opt_state),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
    )


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3f} GiB"


def format_report(report: CostReport) -> str:
    """The dry-run printout."""
    lines = [
        f"Train step on mesh {report.mesh} ({report.num_devices} {report.platform} devices), "
        f"global batch {report.global_batch}:",
        f"  FLOPs per step        {report.flops_per_step:.4g}  ({report.flops_per_device:.4g} per device)",
        f"  FLOPs per image       {report.flops_per_image:.4g}",
        f"  parameters            {report.param_count:,}",
        f"  per device: params    {_gib(report.param_bytes_per_device)}",
        f"              EMA target {_gib(report.target_bytes_per_device)}",
        f"              optimizer {_gib(report.optimizer_bytes_per_device)}",
        f"  compiled per device:  arguments {_gib(report.argument_bytes)}, "
        f"outputs {_gib(report.output_bytes)}, temporaries {_gib(report.temp_bytes)}, "
        f"donated {_gib(report.alias_bytes)}",
        f"  peak memory estimate  {_gib(report.peak_bytes_per_device)} per device",
    ]
    return "\n".join(lines)
