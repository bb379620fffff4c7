#!/usr/bin/env bash
# The two-node demo (`./scripts/demo.sh --cluster`): the same sweep as the embedded demo, on the
# deployment a cluster runs, all on this machine: PostgreSQL (Airflow's metadata DB and the saturn
# store) and Redis from Debian's packages, Airflow with the CeleryExecutor, one worker for the default
# queue and one worker per node; this machine's devices are cut in two disjoint nodes, node0 and node1
# (each worker has [saturn] node and device_ids), as two GPU nodes would be.
#
# Everything lives under ./.saturn-demo-cluster (PostgreSQL data, Airflow home, the shared folder of
# checkpoints, logs, PIDs). Needs root or sudo once, for apt-get (scripts/setup-cluster.sh).
# Stop it with ./scripts/demo-stop.sh --cluster. Settings (environment): SATURN_DEMO_HOME,
# SATURN_DEMO_PORT, SATURN_DEMO_WORKLOAD, SATURN_DEMO_TIMEOUT, SATURN_DEMO_SOLVER, SATURN_DEMO_TIME_LIMIT,
# SATURN_DEMO_NODES (e.g. node0=0,node1=1; default: this machine's devices cut in two).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${SATURN_DEMO_HOME:-$ROOT/.saturn-demo-cluster}
if [ -s "$DEMO/pids" ]; then
  echo "The cluster demo is already running (see $DEMO/env.sh); stop it first: ./scripts/demo-stop.sh --cluster" >&2
  exit 1
fi
mkdir -p "$DEMO/logs"
echo "== 1/4 install (./scripts/setup.sh and setup-cluster.sh; log in $DEMO/logs/setup.log)"
{ ./scripts/setup.sh && ./scripts/setup-cluster.sh; } > "$DEMO/logs/setup.log" 2>&1 || { tail -30 "$DEMO/logs/setup.log" >&2; exit 1; }
PY="$ROOT/.venv/bin/python"
WORKLOAD=${SATURN_DEMO_WORKLOAD:-saturn_airflow/examples/sweep.yaml}
[ -f "$WORKLOAD" ] || { echo "no workload file $WORKLOAD (set SATURN_DEMO_WORKLOAD)" >&2; exit 2; }

echo "== 2/4 start PostgreSQL, Redis and Airflow (CeleryExecutor: api-server, scheduler, dag-processor, triggerer, 3 workers)"
chmod 755 "$DEMO"  # the postgres user must reach its data folder inside
"$PY" scripts/cluster.py start --home "$DEMO" ${SATURN_DEMO_PORT:+--port "$SATURN_DEMO_PORT"} \
  ${SATURN_DEMO_NODES:+--nodes "$SATURN_DEMO_NODES"} > "$DEMO/start.json" || exit 1
# shellcheck disable=SC1091
. "$DEMO/env.sh"
URL=$("$PY" -c "import json; print(json.load(open('$DEMO/start.json'))['url'])")
PW=$("$PY" -c "import json; print(json.load(open('$DEMO/start.json'))['password'])")
# the example sweep on the cluster's nodes (names and device counts from the running workers)
"$PY" - "$WORKLOAD" "$DEMO/workload.yaml" "$DEMO/cluster.json" <<'PY'
import json, sys, yaml
from saturn_airflow.execution.devices import device_type_name
src, out, info = sys.argv[1:]
wl = yaml.safe_load(open(src))
nodes = json.load(open(info))["nodes"]
wl["cluster"] = {"nodes": [{"name": n, "gpus": len(ids), "gpu_type": device_type_name()} for n, ids in nodes.items()]}
open(out, "w").write(yaml.safe_dump(wl, sort_keys=False))
print("  nodes: " + ", ".join(f"{n} = devices {ids}" for n, ids in nodes.items()))
PY

echo "== 3/4 plan and run the example sweep on two nodes ($WORKLOAD)"
set +e
"$PY" "$ROOT/scripts/demo.py" "$URL" "$DEMO/workload.yaml" --password-file "$DEMO/airflow/passwords.json" \
  --timeout "${SATURN_DEMO_TIMEOUT:-1800}" --html "$DEMO/plan.html" \
  ${SATURN_DEMO_SOLVER:+--solver "$SATURN_DEMO_SOLVER"} ${SATURN_DEMO_TIME_LIMIT:+--time-limit "$SATURN_DEMO_TIME_LIMIT"}
rc=$?
set -e
echo
echo "== 4/4 the Airflow UI stays up"
echo "  URL:    $URL/   login: admin / $PW"
echo "  Gantt:  $URL/plugin/saturn  (Browse > Saturn plans)"
echo "  Shell:  source $DEMO/env.sh   (workers: $DEMO/logs/worker-*.log)"
echo "  Stop:   ./scripts/demo-stop.sh --cluster"
exit $rc
