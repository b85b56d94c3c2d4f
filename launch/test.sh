#!/usr/bin/env bash
# Tests: installs what it needs, checks style, then runs the whole test suite on the CPU.
# Usage: bash launch/test.sh [extra pytest arguments]
# Tests run in REJEPA_TEST_WORKERS pytest-xdist processes (default 2, the CI machine's core count);
# `-n 0` among the arguments runs them in this one process, one after the other.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/setup_env.sh
source "${repo_root}/launch/setup_env.sh"
cd "${repo_root}"
ruff check .
ruff format --check .
python -m pytest tests -q -n "${REJEPA_TEST_WORKERS:-2}" "$@"
