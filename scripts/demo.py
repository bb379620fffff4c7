"""The demo's driver, run by scripts/demo.sh once Airflow is up: log in over REST, create the pools,
trigger the planning DAG for the example sweep, wait for every plan version's DAG to finish, and print
planned vs actual makespan against current practice, then the leaderboard and the winner's model file. Stdlib HTTP only; the engine does the math.

Usage: python scripts/demo.py BASE_URL WORKLOAD.yaml [--password-file F] [--timeout S] [--solver S]
       [--time-limit S] [--html OUT.html]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

TERMINAL = {"success", "failed"}
_last_print = [0.0]


def say(line: str) -> None:
    _last_print[0] = time.time()
    print(line, flush=True)


class Api:
    """Airflow's REST API with a JWT from POST /auth/token."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.token: Optional[str] = None

    def call(self, method: str, path: str, body: Any = None, ok=(200, 201)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return None
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read().decode()[:300]}") from None

    def login(self, user: str, password: str) -> None:
        self.token = self.call("POST", "/auth/token", {"username": user, "password": password})["access_token"]


def wait(what: str, fn, timeout_s: float, every_s: float = 2.0):
    """Poll fn() until it returns something truthy; print a dot every 30 s so a user sees life."""
    t0 = last = time.time()
    while True:
        try:
            v = fn()
        except (urllib.error.URLError, ConnectionError, RuntimeError, TimeoutError) as e:
            v, err = None, e
        else:
            err = None
        if v:
            return v
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f" ({err})" if err else ""))
        if time.time() - max(last, _last_print[0]) > 30:  # only when nothing else was said meanwhile
            say(f"  ... still waiting for {what} ({time.time() - t0:.0f} s)")
            last = time.time()
        time.sleep(every_s)


def healthy(api: Api) -> bool:
    h = api.call("GET", "/api/v2/monitor/health")
    parts = [h.get(k, {}) for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")]
    return all(p.get("status") == "healthy" for p in parts)


def ensure_pools(base_url: str, workload_path: str, user: str, password: str) -> list[str]:
    """One pool per node, one slot per device (the planning DAG checks them again)."""
    from saturn_airflow.spec.workload import load_workload
    from saturn_airflow.tasks.planning import nodes_of
    from saturn_airflow.tasks.pools import ensure_pools_rest

    done = ensure_pools_rest(base_url, nodes_of(load_workload(workload_path)), login=user, password=password)
    return [f"{p['name']} ({p['slots']} slots)" for p in done]


class Reporter:
    """Print what changed since the last poll: task states of a run, then the jobs' progress."""

    def __init__(self):
        self.last: dict[str, tuple[str, str, float]] = {}  # key -> (line, state, when)

    def say(self, key: str, line: str, state: str = "", every_s: float = 0.0) -> None:
        """Print `line` when it changed, and for the same state at most every `every_s` seconds."""
        old, old_state, at = self.last.get(key, ("", "", 0.0))
        if line != old and (state != old_state or time.time() - at >= every_s):
            self.last[key] = (line, state, time.time())
            say(f"  {line}")

    def tasks(self, api: Api, dag_id: str, run_id: str) -> None:
        tis = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        parts = [f"{t['task_id']}{'' if t.get('map_index', -1) < 0 else '[' + str(t['map_index']) + ']'}="
                 f"{t['state'] or 'none'}" for t in sorted(tis, key=lambda t: (t.get('start_date') or '~', t['task_id']))]
        self.say(dag_id + run_id, f"{dag_id}: " + " ".join(parts))

    def jobs(self, progress: dict[str, dict]) -> None:
        from saturn_airflow.views.gantt_html import fmt_s

        for job, r in sorted(progress.items()):
            if not r:
                continue
            rate, step, total = r.get("rate_steps_per_s"), r.get("step"), r.get("total")
            eta = f", ETA {fmt_s((total - step) / rate)}" if r.get("state") == "running" and rate and total else ""
            rate_s = f", {rate:.2f} steps/s" if rate else ""
            self.say("job " + job, f"{job}: {r.get('state')} {step}/{total} steps{rate_s}{eta}",
                     state=str(r.get("state")), every_s=30)


def dag_run(api: Api, dag_id: str, run_id: str) -> dict:
    return api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")


def latest_run(api: Api, dag_id: str) -> Optional[dict]:
    runs = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1", ok=(404,))
    return (runs or {}).get("dag_runs", [None])[0] if runs and runs.get("dag_runs") else None


def active_planning_runs(api: Api) -> int:
    runs = api.call("GET", "/api/v2/dags/saturn_plan/dagRuns?state=queued&state=running&limit=10")
    return runs["total_entries"]


def newest(ps, plan_id: str) -> str:
    while (nxt := ps.superseded_by(plan_id)):
        plan_id = nxt
    return plan_id


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("workload")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--solver", default=None)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--html", default=None, help="also write the Gantt chart here")
    a = ap.parse_args(argv)

    from saturn_airflow import settings

    from saturn_airflow.views import gantt_html
    from saturn_airflow.tasks.render import PLANNING_DAG_ID, dag_id
    from saturn_airflow.store.records import PlanStore, ProgressStore, Store

    api = Api(a.base_url)
    t0 = time.time()
    wait("the api-server", lambda: api.call("GET", "/api/v2/monitor/health"), 300)
    password = json.loads(Path(a.password_file).read_text())[a.user]
    api.login(a.user, password)
    wait("scheduler, triggerer and dag-processor to be healthy", lambda: healthy(api), 300)
    say(f"Airflow is up ({time.time() - t0:.0f} s). Pools: {', '.join(ensure_pools(a.base_url, a.workload, a.user, password))}")

    wait(f"DAG {PLANNING_DAG_ID} to be parsed",
         lambda: api.call("GET", f"/api/v2/dags/{PLANNING_DAG_ID}", ok=(404,)), 300)
    api.call("PATCH", f"/api/v2/dags/{PLANNING_DAG_ID}", {"is_paused": False})
    conf: dict[str, Any] = {"workload": str(Path(a.workload).resolve())}
    if a.solver:
        conf["solver"] = a.solver
    if a.time_limit:
        conf["time_limit"] = a.time_limit
    ps = PlanStore(Store(settings.store_url()))
    known = set(ps.ids())
    run = api.call("POST", f"/api/v2/dags/{PLANNING_DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    say(f"Triggered {PLANNING_DAG_ID} run {run['dag_run_id']} for {a.workload} (profile, then solve)")
    rep = Reporter()

    def planned():
        rep.tasks(api, PLANNING_DAG_ID, run["dag_run_id"])
        s = dag_run(api, PLANNING_DAG_ID, run["dag_run_id"])["state"]
        return s in TERMINAL and s

    state = wait("the planning run", planned, a.timeout, 3)
    if state != "success":
        print(f"The planning run ended {state}; see its task logs in the UI.", file=sys.stderr)
        return 1
    root = wait("the published plan", lambda: sorted(set(ps.ids()) - known)[:1], 60)[0]
    say(f"Plan {root} published; its DAG {dag_id(root)} runs the jobs.")

    progress_store = ProgressStore(Store(settings.store_url()), sweep=ps.get(root).sweep)

    def finished():
        pid = newest(ps, root)
        rep.jobs({j: r for j, r in progress_store.all(ps.get(pid).workload).items() if r})
        r = latest_run(api, dag_id(pid))
        if not r or r["state"] not in TERMINAL or active_planning_runs(api):
            return None
        return pid if newest(ps, root) == pid else None  # no re-plan slipped in meanwhile

    last = wait("the plan's DAG runs (re-plans included) to finish", finished, a.timeout, 5)
    lineage = ps.lineage(last)
    st = Store(settings.store_url())
    cluster, baseline = gantt_html.store_context(st, lineage)
    progress = ProgressStore(st, sweep=lineage[-1].sweep).all(lineage[-1].workload)
    data = gantt_html.chart_data(lineage, progress, baseline, cluster=cluster)
    sw = data["sweep"]
    fmt = gantt_html.fmt_s
    print()
    print(f"Sweep {lineage[-1].workload}: {sw['jobs_done']}/{sw['jobs']} jobs done, {sw['replans']} re-plan(s)")
    print(f"  planned makespan   {fmt(sw['planned_makespan_s']):>8}  (lower bound {fmt(sw['lower_bound_s'])}, "
          f"solver {lineage[0].solver.name} {lineage[0].solver.status})")
    actual = sw["actual_makespan_s"] if sw["actual_makespan_s"] is not None else sw["projected_makespan_s"]
    print(f"  actual makespan    {fmt(actual):>8}" + ("" if sw["actual_makespan_s"] is not None else "  (not all jobs done)"))
    if sw["baseline_makespan_s"]:
        b = sw["baseline_makespan_s"]
        gain = 100 * (1 - sw["planned_makespan_s"] / b)
        real = "" if sw["actual_makespan_s"] is None else \
            f", actual {abs(100 * (1 - sw['actual_makespan_s'] / b)):.0f}% {'shorter' if sw['actual_makespan_s'] <= b else 'longer'}"
        print(f"  current practice   {fmt(b):>8}  (every job on all devices of a node, one after another): "
              f"planned {abs(gain):.0f}% {'shorter' if gain >= 0 else 'longer'}{real}")
    from saturn_airflow.views.leaderboard import leaderboard, render_text
    from saturn_airflow.views.leaderboard_html import render_results

    jobs: list[str] = []
    for p in lineage:
        jobs += [x.job for x in p.assignments if x.job not in jobs]
    board = leaderboard(st, lineage[-1].workload, lineage[-1].sweep, jobs)
    if a.html:
        Path(a.html).write_text(gantt_html.render_html(lineage, progress, baseline, cluster=cluster,
                                                       extra_html=render_results(board)))
        print(f"  chart file         {a.html}")
    print()
    print(render_text(board))
    w = board.winner
    if w is not None and w.export_path:
        print("  Load it without torch.distributed (safetensors + the import path in its header):")
        print(f"    python -c \"from saturn_airflow.execution.export import load_exported; "
              f"print(load_exported('{w.export_path}'))\"")
    print(f"  The same table: saturn results {last} --store {st.url} [--json | --csv]; "
          "in the UI: Browse > Saturn plans")
    (Path(a.password_file).parent / "result.json").write_text(
        json.dumps({"plan_id": last, "root_plan_id": root, "dag_id": dag_id(last), "sweep": sw,
                    "winner": None if w is None else {"job": w.job, "metric": w.metric, "final": w.final,
                                                      "export_path": w.export_path}}, indent=1))
    return 0 if sw["jobs_done"] == sw["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
