"""REJEPA: label-free retrieval descriptors for remote-sensing archives, in JAX.

Importing the package adds the project's measured XLA CPU defaults to XLA_FLAGS before JAX starts
its backend (rejepa_jax/xla_cpu_flags.py; REJEPA_XLA_CPU_DEFAULTS=0 turns this off).
"""

from rejepa_jax import xla_cpu_flags

xla_cpu_flags.apply()
