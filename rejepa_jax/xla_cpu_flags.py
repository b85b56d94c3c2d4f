"""XLA CPU compiler settings the project applies before JAX starts its CPU backend.

With jaxlib 0.10, XLA's CPU compiler fuses each LayerNorm into the YNNPACK matrix product that
follows it (the `reduce` YNN fusion type). Profiled on a 2-core CPU, that fused kernel ran at about
67 GFLOP/s where the bare product beside it ran at 148: the normalisation is recomputed in the
matmul's inner loop. Taking `reduce` out of the YNN fusion types leaves each LayerNorm as its own
loop fusion and the product at full speed. Measured side by side (benchmarks/BENCHMARKS.md,
"Train step and encoder forward against the official I-JEPA"): ViT-Ti/8 encoder inference 105 ->
142 images/s; the train steps and the ViT-S/16 forward moved within the rounds' spread. Same
function, float rounding only.

XLA reads XLA_FLAGS once, when the first computation starts its backend, and aborts on a flag it
does not know, so the flag is added only for the jaxlib versions it was measured on, only when
XLA_FLAGS does not already choose the YNN fusion types, and never when REJEPA_XLA_CPU_DEFAULTS=0.
GPU and TPU backends ignore `xla_cpu_*` flags.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
# jaxlib versions (prefixes) whose XLA knows the flag and where it was measured to help.
MEASURED_JAXLIB_VERSIONS = ("0.10.",)
OPT_OUT_VARIABLE = "REJEPA_XLA_CPU_DEFAULTS"


def jaxlib_version() -> str:
    """The installed jaxlib's version, read from its metadata (importing it would be too early)."""
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ""


def add_cpu_defaults(environ: MutableMapping[str, str], version: str) -> bool:
    """Appends the YNN fusion flag to environ["XLA_FLAGS"] when it applies; True when it was added."""
    if environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return False
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False  # The user's own choice wins.
    if not version.startswith(MEASURED_JAXLIB_VERSIONS):
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}".strip()
    return True


def apply() -> bool:
    """Adds the project's CPU defaults to this process's XLA_FLAGS (see the module docstring)."""
    return add_cpu_defaults(os.environ, jaxlib_version())
