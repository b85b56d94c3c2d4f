#!/usr/bin/env bash
# Demo, the whole path on the embedded EuroSAT sample (about 20 minutes on 2 CPU cores):
#   1. train REJEPA without labels and print retrieval P@K / mAP@K beside colour-histogram and
#      random-init baselines;
#   2. export the archive's descriptors into a ScaNN index (auto-tuned, with a manifest);
#   3. evaluate the index: report.md / report.json and pictures (gallery, per-class P@K, projection).
# Installs what it needs first. Re-running resumes (or only re-evaluates a finished run).
# Usage: bash launch/demo.sh [WORKDIR] [extra flags for rejepa_jax.main]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup_env.sh
source "${repo_root}/launch/setup_env.sh"
workdir="${1:-${repo_root}/workdirs/demo}"
shift || true
cd "${repo_root}"
python -m rejepa_jax.main --config configs/demo.py --workdir "${workdir}" "$@"
python -m rejepa_jax.export --workdir "${workdir}" --out "${workdir}/index"
python -m rejepa_jax.evaluate --index "${workdir}/index" --queries query --ks 5,10,20,50 --out "${workdir}/report"
echo
echo "Report: ${workdir}/report/report.md"
echo "Gallery of queries and their nearest neighbours: ${workdir}/report/gallery.png"
