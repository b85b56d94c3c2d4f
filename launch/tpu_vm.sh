#!/usr/bin/env bash
# Cloud TPU VM pod slice: create it, copy this repository to every worker, install, and run
# `python -m rejepa_jax.main` on all workers at once (jax.distributed finds the pod by itself).
#
# Usage: bash launch/tpu_vm.sh [--dry-run] ACTION [-- MAIN_ARGS...]
#   ACTION: create | copy | install | run | delete | all (create, copy, install, run)
# Settings (environment): TPU_NAME (rejepa), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-32),
#   TPU_VERSION (tpu-ubuntu2204-base), PROJECT (gcloud's default when empty).
# Example (the workdir and data must be visible to every worker, e.g. a gcsfuse-mounted bucket):
#   bash launch/tpu_vm.sh all -- --config configs/fmow_rgb.py --workdir /mnt/bucket/runs/fmow \
#     --config.data.tfds_data_dir=/mnt/bucket/tfds
# Re-running `run` with the same --workdir resumes; a preempted slice gets SIGTERM, saves and exits.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
action="${1:?usage: launch/tpu_vm.sh [--dry-run] create|copy|install|run|delete|all [-- MAIN_ARGS...]}"
shift
if [[ "${1:-}" == "--" ]]; then
  shift
fi
main_args=("$@")

tpu_name="${TPU_NAME:-rejepa}"
zone="${ZONE:-us-central2-b}"
accelerator="${ACCELERATOR_TYPE:-v4-32}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
project_flag=()
if [[ -n "${PROJECT:-}" ]]; then
  project_flag=("--project=${PROJECT}")
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
remote_dir="rejepa_jax"

run() {
  if [[ "${dry_run}" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "${tpu_name}" --zone="${zone}" "${project_flag[@]}" --worker=all \
    --command="$1"
}

create() {
  run gcloud compute tpus tpu-vm create "${tpu_name}" --zone="${zone}" "${project_flag[@]}" \
    --accelerator-type="${accelerator}" --version="${version}"
}

copy() {
  # The committed tree only (no virtual environment, no run folders).
  local archive="/tmp/${remote_dir}.tar.gz"
  run git -C "${repo_root}" archive --format=tar.gz -o "${archive}" HEAD
  run gcloud compute tpus tpu-vm scp "${archive}" "${tpu_name}:${remote_dir}.tar.gz" \
    --zone="${zone}" "${project_flag[@]}" --worker=all
  on_all_workers "rm -rf ${remote_dir} && mkdir ${remote_dir} && tar -xzf ${remote_dir}.tar.gz -C ${remote_dir}"
}

install() {
  # The pinned CPU requirements, then the TPU build of the same JAX version.
  on_all_workers "cd ${remote_dir} && bash launch/setup_env.sh && .venv/bin/pip install -q 'jax[tpu]==0.10.2'"
}

train() {
  # Each argument quoted on its own (%q), so none is split or expanded by the workers' shell, and
  # no arguments add no empty one.
  local arg quoted=""
  for arg in "${main_args[@]}"; do
    quoted+=" $(printf '%q' "${arg}")"
  done
  on_all_workers "cd ${remote_dir} && .venv/bin/python -m rejepa_jax.main --distributed=on${quoted}"
}

delete() {
  run gcloud compute tpus tpu-vm delete "${tpu_name}" --zone="${zone}" "${project_flag[@]}" --quiet
}

case "${action}" in
  create) create ;;
  copy) copy ;;
  install) install ;;
  run) train ;;
  delete) delete ;;
  all) create; copy; install; train ;;
  *) echo "unknown action: ${action}" >&2; exit 2 ;;
esac
