#!/usr/bin/env bash
# Create ./.venv with the provider, Airflow, the MLflow client, the `cluster` extra (Celery, Redis and
# PostgreSQL clients: the two-node e2e) and test tools, from the pinned constraints file; plus the
# MLflow tracking server (the full `mlflow` package), which the MLflow end-to-end test runs.
# Idempotent: a second run only re-installs the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch is pinned to the CPU wheel on disk here (see constraints.txt); on a GPU machine the same pin
# takes the CUDA build from PyPI.
.venv/bin/pip install -q -c constraints.txt -e ".[airflow,mlflow,cluster,test]" mlflow
# An editable install leaves an egg-info next to the sources; when that folder is on sys.path,
# importlib.metadata sees the distribution twice and Airflow registers the plugin twice.
rm -rf ./*.egg-info
