#!/usr/bin/env bash
# Creates ./.venv from the pinned requirements if it is absent or stale, and installs the package.
# Sourced by demo.sh and test.sh; safe to run again (it only reinstalls when requirements change).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${REJEPA_VENV:-${repo_root}/.venv}"
python_bin="${PYTHON:-python3}"
stamp="${venv}/.requirements.sha256"
wanted="$(sha256sum "${repo_root}/requirements.txt" "${repo_root}/setup.py" | sha256sum | cut -d' ' -f1)"

if [[ ! -x "${venv}/bin/python" ]]; then
  echo "Creating virtual environment in ${venv}"
  "${python_bin}" -m venv "${venv}"
fi
if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${wanted}" ]]; then
  echo "Installing pinned requirements into ${venv}"
  "${venv}/bin/python" -m pip install --quiet --upgrade pip
  "${venv}/bin/python" -m pip install --quiet -r "${repo_root}/requirements.txt"
  "${venv}/bin/python" -m pip install --quiet --no-deps -e "${repo_root}"
  echo "${wanted}" > "${stamp}"
fi
export PATH="${venv}/bin:${PATH}"
