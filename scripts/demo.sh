#!/usr/bin/env bash
# The demo (README's first command): install, start Airflow with embedded defaults, plan and run the
# example sweep, print planned vs actual makespan against current practice, and leave the UI up.
#
# Everything lives under ./.saturn-demo (Airflow home with SQLite, the saturn store, logs, PIDs).
# Airflow runs as four processes (scheduler, dag-processor, triggerer, api-server; LocalExecutor),
# each in its own process group; ./scripts/demo-stop.sh stops them. Uses this machine's GPUs, or
# one CPU core per device when there is none.
#
# Settings (environment): SATURN_DEMO_HOME (./.saturn-demo), SATURN_DEMO_PORT (8080, else a free
# one), SATURN_DEMO_HOST (127.0.0.1), SATURN_DEMO_WORKLOAD (saturn_airflow/examples/sweep.yaml), SATURN_DEMO_TIMEOUT
# (seconds to wait for the sweep, 1800), SATURN_DEMO_SOLVER, SATURN_DEMO_TIME_LIMIT.
#
# `./scripts/demo.sh --cluster`: the same sweep on two nodes of this machine under the CeleryExecutor,
# with PostgreSQL and Redis (scripts/demo-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cluster" ]; then shift; exec ./scripts/demo-cluster.sh "$@"; fi
ROOT=$PWD
DEMO=${SATURN_DEMO_HOME:-$ROOT/.saturn-demo}
HOST=${SATURN_DEMO_HOST:-127.0.0.1}

running() {  # any recorded component still alive?
  [ -s "$DEMO/pids" ] || return 1
  local _n pid
  while read -r _n pid; do kill -0 "$pid" 2>/dev/null && return 0; done < "$DEMO/pids"
  return 1
}
if running; then
  echo "The demo is already running (see $DEMO/env.sh); stop it first: ./scripts/demo-stop.sh" >&2
  exit 1
fi

mkdir -p "$DEMO/logs"
echo "== 1/4 install (./scripts/setup.sh; minutes on the first run, log in $DEMO/logs/setup.log)"
./scripts/setup.sh > "$DEMO/logs/setup.log" 2>&1 || { tail -30 "$DEMO/logs/setup.log" >&2; exit 1; }
export PATH="$ROOT/.venv/bin:$PATH"
PY="$ROOT/.venv/bin/python"

WORKLOAD=${SATURN_DEMO_WORKLOAD:-saturn_airflow/examples/sweep.yaml}
[ -f "$WORKLOAD" ] || { echo "no workload file $WORKLOAD (set SATURN_DEMO_WORKLOAD)" >&2; exit 2; }

PORT=${SATURN_DEMO_PORT:-8080}
if ! "$PY" -c "import socket,sys; s=socket.socket(); s.bind(('$HOST', $PORT))" 2>/dev/null; then
  PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('$HOST', 0)); print(s.getsockname()[1])")
fi

mkdir -p "$DEMO/airflow" "$DEMO/logs" "$DEMO/store"
rm -f "$DEMO/pids" "$DEMO/result.json"
if [ ! -s "$DEMO/passwords.json" ]; then  # a fresh random password, kept across restarts
  "$PY" -c "import json,secrets; print(json.dumps({'admin': secrets.token_urlsafe(9)}))" > "$DEMO/passwords.json"
fi
if [ ! -s "$DEMO/secret" ]; then "$PY" -c "import secrets; print(secrets.token_hex(32))" > "$DEMO/secret"; fi
PW=$("$PY" -c "import json; print(json.load(open('$DEMO/passwords.json'))['admin'])")
DEVICES=$("$PY" -c "from saturn_airflow.spec.cluster import local_cluster; print(local_cluster().total_gpus)")
PARALLELISM=$(( DEVICES + 4 ))

cat > "$DEMO/env.sh" <<ENV
# source this file to use the demo's Airflow from a shell (airflow dags list, saturn show ...)
export PATH="$ROOT/.venv/bin:\$PATH"
export AIRFLOW_HOME="$DEMO/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=$PARALLELISM
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=$PARALLELISM
export AIRFLOW__CORE__FERNET_KEY=
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$DEMO/airflow/airflow.db"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$DEMO/passwords.json"
export AIRFLOW__API__BASE_URL="http://$HOST:$PORT"
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://$HOST:$PORT/execution/"
export AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$DEMO/secret")"
export AIRFLOW__API__SECRET_KEY="$(cat "$DEMO/secret")"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
export AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=5
export PYTHONUNBUFFERED=1
export AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=3600
export AIRFLOW__SATURN__STORE_URL="$DEMO/store"
# the planning DAG creates or resizes the device pools through the REST API as this user
export AIRFLOW_CONN_SATURN_API='{"conn_type": "http", "host": "$HOST", "port": $PORT, "login": "admin", "password": "$PW"}'
unset SATURN_HOME
ENV
# shellcheck disable=SC1091
. "$DEMO/env.sh"

echo "== 2/4 start Airflow $("$PY" -c 'import airflow; print(airflow.__version__)') at http://$HOST:$PORT ($DEVICES devices, logs in $DEMO/logs)"
airflow db migrate > "$DEMO/logs/db-migrate.log" 2>&1 || { tail -20 "$DEMO/logs/db-migrate.log" >&2; exit 1; }
start() {  # name command...: its own session (process group), so demo-stop.sh stops it and its children
  local name=$1; shift
  setsid "$@" > "$DEMO/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $!" >> "$DEMO/pids"
}
start api-server airflow api-server --host "$HOST" --port "$PORT"
start scheduler airflow scheduler
start dag-processor airflow dag-processor
start triggerer airflow triggerer

echo "== 3/4 plan and run the example sweep ($WORKLOAD)"
set +e
"$PY" "$ROOT/scripts/demo.py" "http://$HOST:$PORT" "$WORKLOAD" --password-file "$DEMO/passwords.json" \
  --timeout "${SATURN_DEMO_TIMEOUT:-1800}" --html "$DEMO/plan.html" \
  ${SATURN_DEMO_SOLVER:+--solver "$SATURN_DEMO_SOLVER"} ${SATURN_DEMO_TIME_LIMIT:+--time-limit "$SATURN_DEMO_TIME_LIMIT"}
rc=$?
set -e

PLAN_DAG=$("$PY" -c "import json; print(json.load(open('$DEMO/result.json'))['dag_id'])" 2>/dev/null || true)
echo
echo "== 4/4 the Airflow UI stays up"
echo "  URL:    http://$HOST:$PORT/   login: admin / $PW"
echo "  Gantt:  http://$HOST:$PORT/plugin/saturn  (Browse > Saturn plans)"
[ -n "$PLAN_DAG" ] && echo "  DAG:    http://$HOST:$PORT/dags/$PLAN_DAG/plugin/saturn-plan  (the DAG's 'Saturn plan' tab)"
echo "  Shell:  source $DEMO/env.sh"
echo "  Stop:   ./scripts/demo-stop.sh"
exit $rc
