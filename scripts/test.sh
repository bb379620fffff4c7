#!/usr/bin/env bash
# The test command (README): set up ./.venv (and Debian chromium for the browser test) if needed,
# then the linter, the unit tests, then the marked end-to-end tests (real Airflow scheduler, real browser).
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-browser.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "not e2e" "$@"
.venv/bin/python -m pytest -q -m e2e "$@"
