#!/usr/bin/env bash
# The test command (README): set up ./.venv (and Debian chromium for the browser test, redis-server
# and postgresql for the store's PostgreSQL tests and the two-node Celery test) if needed, then the
# linter, the unit tests, then the marked end-to-end tests (real Airflow scheduler, real browser,
# real cluster).
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-browser.sh
./scripts/setup-cluster.sh
# on CI these must run, not skip: the store's PostgreSQL backend and the two-node Celery e2e
export SATURN_REQUIRE_POSTGRES=1 SATURN_REQUIRE_CLUSTER=1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "not e2e" "$@"
.venv/bin/python -m pytest -q -m e2e "$@"
