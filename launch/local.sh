#!/usr/bin/env bash
# Runs rejepa_jax.main as N local processes on fake CPU devices, the way a multi-host job runs:
# one coordinator on 127.0.0.1, gloo collectives, each process reading its own slice of the data.
#
# Usage: bash launch/local.sh [--processes N] [--devices D] [--dry-run] -- MAIN_ARGS...
#   --processes N   number of processes (default 2)
#   --devices D     fake CPU devices per process (default 2)
#   --dry-run       print the commands instead of running them
# Example:
#   bash launch/local.sh --processes 2 --devices 2 -- --config configs/demo.py:runlocal --workdir /tmp/run
# Process 0 prints to the console; process i writes ${LOG_DIR:-/tmp}/rejepa_process_<i>.log.
set -euo pipefail

processes=2
devices=2
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --processes) processes="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "unknown option: $1 (put main's arguments after --)" >&2; exit 2 ;;
  esac
done
main_args=("$@")
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x "${repo_root}/.venv/bin/python" ]]; then
  python_bin="${repo_root}/.venv/bin/python"
fi
port="${COORDINATOR_PORT:-$("${python_bin}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${LOG_DIR:-/tmp}"
mkdir -p "${log_dir}"

# The command of process $1, in the array `process_command`: the dry run prints it, the launch
# runs it.
command_for() {
  process_command=(env JAX_PLATFORMS=cpu "JAX_NUM_CPU_DEVICES=${devices}" "${python_bin}"
    -m rejepa_jax.main "--coordinator_address=127.0.0.1:${port}" "--num_processes=${processes}"
    "--process_id=$1" "${main_args[@]}")
}

if [[ "${dry_run}" == 1 ]]; then
  # One line per process that bash runs as is: every word quoted (%q), after a cd to the repository.
  for ((i = 0; i < processes; i++)); do
    command_for "${i}"
    printf 'cd %q && ' "${repo_root}"
    printf '%q ' "${process_command[@]}"
    echo
  done
  exit 0
fi

run_process() {
  command_for "$1"
  # exec: the background job is Python itself (env execs it in place), so signals sent to its pid
  # reach it.
  exec "${process_command[@]}"
}

cd "${repo_root}"
pids=()
for ((i = 0; i < processes; i++)); do
  if [[ "${i}" == 0 ]]; then
    run_process "${i}" &
  else
    run_process "${i}" > "${log_dir}/rejepa_process_${i}.log" 2>&1 &
  fi
  pids+=("$!")
done
# Forward SIGTERM/SIGINT to every process, so a preemption reaches the whole job.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
status=0
for pid in "${pids[@]}"; do
  # A trapped signal interrupts `wait`; keep waiting while the process is still running.
  until wait "${pid}"; do
    code=$?
    if ! kill -0 "${pid}" 2>/dev/null; then
      status="${code}"
      break
    fi
  done
done
exit "${status}"
