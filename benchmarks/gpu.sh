#!/usr/bin/env bash
# Accelerator benchmark in one go (within 8 minutes on one H100/H200): train-step MFU of ViT-B/16 at
# 224 px in bf16, export images/s, search QPS. Installs the CUDA build of the pinned JAX first.
# Usage: bash benchmarks/gpu.sh [--out results.json]      (DRY_RUN=1 prints the commands)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "$*"
  else
    "$@"
  fi
}
cd "${repo_root}"
# shellcheck source=launch/setup_env.sh
source launch/setup_env.sh
run python -m pip install -q "jax[cuda12]==0.10.2"
run python -m benchmarks.accelerator "$@"
