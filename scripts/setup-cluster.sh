#!/usr/bin/env bash
# What a multi-node (CeleryExecutor) setup needs on top of scripts/setup.sh, for the two-node
# end-to-end test and `./scripts/demo.sh --cluster`: Debian's redis-server (the Celery broker) and
# postgresql (Airflow's metadata DB and the saturn store), and the provider's `cluster` extra
# (providers-celery, celery[redis], psycopg2-binary, asyncpg) from the pinned constraints.
# Idempotent; the Debian packages need root or sudo. Their own service starts are not used: the test
# and the demo start private servers on loopback (scripts/cluster.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d: the packages' post-install scripts would start system-wide servers; we run our own
  $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  $SUDO apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
.venv/bin/pip install -q -c constraints.txt -e ".[airflow,cluster,test]"
rm -rf ./*.egg-info
redis-server --version
ls -d /usr/lib/postgresql/*/bin | tail -1
