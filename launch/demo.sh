#!/usr/bin/env bash
# Demo: installs what it needs, trains REJEPA on the embedded EuroSAT sample (2 CPU cores: about
# 8 minutes), then prints retrieval P@K / mAP@K beside colour-histogram and random-init baselines.
# Usage: bash launch/demo.sh [WORKDIR] [extra flags for rejepa_jax.main]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup_env.sh
source "${repo_root}/launch/setup_env.sh"
workdir="${1:-${repo_root}/workdirs/demo}"
shift || true
cd "${repo_root}"
exec python -m rejepa_jax.main --config configs/demo.py --workdir "${workdir}" "$@"
