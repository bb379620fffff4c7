#!/usr/bin/env bash
# Stop the demo started by scripts/demo.sh: TERM each recorded component's process group and every
# descendant of it (training processes may start their own sessions), wait up to 30 s, then KILL
# what is left. Keeps ./.saturn-demo (remove it to start over).
#
# `./scripts/demo-stop.sh --cluster` stops the two-node demo (Airflow, Redis, PostgreSQL) by its PIDs.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cluster" ]; then
  exec .venv/bin/python scripts/cluster.py stop --home "${SATURN_DEMO_HOME:-$PWD/.saturn-demo-cluster}"
fi
DEMO=${SATURN_DEMO_HOME:-$PWD/.saturn-demo}
[ -s "$DEMO/pids" ] || { echo "no demo running ($DEMO/pids is missing)"; exit 0; }

descendants() {  # pid...: every live descendant of these pids
  ps -eo pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END { changed = 1
          while (changed) { changed = 0
            for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
          for (p in keep) print p }'
}
ROOTS=$(awk '{print $2}' "$DEMO/pids" | tr '\n' ' ')
ALL=$(descendants $ROOTS)
while read -r name pid; do
  if kill -0 "$pid" 2>/dev/null; then echo "stopping $name (pid $pid)"; kill -TERM -- "-$pid" 2>/dev/null; fi
done < "$DEMO/pids"
for p in $ALL; do kill -TERM "$p" 2>/dev/null; done
for _ in $(seq 30); do
  alive=0
  for p in $ALL; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 1
done
for p in $ALL; do kill -0 "$p" 2>/dev/null && { echo "killing pid $p"; kill -KILL "$p" 2>/dev/null; }; done
while read -r _ pid; do kill -KILL -- "-$pid" 2>/dev/null; done < "$DEMO/pids"
rm -f "$DEMO/pids"
echo "demo stopped"
