#!/usr/bin/env bash
# Stop the demo started by scripts/demo.sh: TERM each component's process group (by the PIDs it
# recorded), wait up to 30 s, then KILL what is left. Keeps ./.saturn-demo (remove it to start over).
set -uo pipefail
cd "$(dirname "$0")/.."
DEMO=${SATURN_DEMO_HOME:-$PWD/.saturn-demo}
[ -s "$DEMO/pids" ] || { echo "no demo running ($DEMO/pids is missing)"; exit 0; }
while read -r name pid; do
  if kill -0 "$pid" 2>/dev/null; then echo "stopping $name (pid $pid)"; kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; fi
done < "$DEMO/pids"
for _ in $(seq 30); do
  alive=0
  while read -r _ pid; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done < "$DEMO/pids"
  [ $alive = 0 ] && break
  sleep 1
done
while read -r name pid; do
  if kill -0 -- "-$pid" 2>/dev/null; then echo "killing $name (pid $pid)"; kill -KILL -- "-$pid" 2>/dev/null; fi
done < "$DEMO/pids"
rm -f "$DEMO/pids"
echo "demo stopped"
