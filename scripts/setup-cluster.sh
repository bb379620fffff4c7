#!/usr/bin/env bash
# What a multi-node (CeleryExecutor) setup needs on top of scripts/setup.sh, for the two-node
# end-to-end test and `./scripts/demo.sh --cluster`: Debian's redis-server (the Celery broker) and
# postgresql (Airflow's metadata DB and the saturn store), and the provider's `cluster` extra
# (providers-celery, celery[redis], psycopg2-binary, asyncpg) from the pinned constraints (setup.sh
# installs it too; here only when missing). Idempotent and fast when everything is there; the Debian
# packages need root or sudo. Their own service starts are not used: the test and the demo start
# private servers on loopback (scripts/cluster.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d: the packages' post-install scripts would start system-wide servers; we run our own.
  # A policy already there (container images ship one) is left as it is.
  OWN_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    OWN_POLICY=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null
  if [ "$OWN_POLICY" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
if ! .venv/bin/python -c "import importlib.metadata as m
for d in ('apache-airflow-providers-celery', 'celery', 'redis', 'psycopg2-binary', 'asyncpg'): m.version(d)" 2>/dev/null; then
  .venv/bin/pip install -q -c constraints.txt -e ".[airflow,cluster,test]"
  rm -rf ./*.egg-info
fi
redis-server --version
ls -d /usr/lib/postgresql/*/bin | tail -1
