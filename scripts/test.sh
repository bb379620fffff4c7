#!/usr/bin/env bash
# The test command (README): set up ./.venv if needed, then unit tests, then the marked e2e tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest -q -m "not e2e" "$@"
.venv/bin/python -m pytest -q -m e2e "$@"
