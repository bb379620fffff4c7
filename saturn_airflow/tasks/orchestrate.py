"""The engine side of the Airflow operators: each planning/training/drift step as a plain function.

Operators in `operators/` call these and translate the outcome (return value, skip, failure) into
Airflow terms; everything here is testable without Airflow.

Store layout used here (besides store.py's):
  tables/<plan_id>.json         the profile table a plan was solved from (re-plans reuse the root's)
  staged/<plan_id>.json         a solved plan waiting for the publish step
  log stream events/<workload>  append-only job events (start/end of every training attempt)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from saturn_airflow import settings
from saturn_airflow.control.drift import assess
from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.plan import Plan, check_plan, parse_plan
from saturn_airflow.spec.profile_table import ProfileTable, parse_profile_table
from saturn_airflow.store import keys
from saturn_airflow.store.records import PlanStore, ProgressStore, Store

# Parallelisms that cannot run on fewer devices than this (a pipeline needs two stages); a registered
# parallelism class may declare its own `min_devices`.
MIN_DEVICES_FALLBACK = {"pipeline": 2}


# --------------------------------------------------------------------------- validation
def _min_devices(name: str) -> int:
    try:
        from saturn_airflow.parallelisms import get_parallelism  # issue 3's registry; may import torch

        cls = get_parallelism(name)
        value = getattr(cls, "min_devices", None)
        if value:
            return int(value)
    except Exception:
        pass
    return MIN_DEVICES_FALLBACK.get(name, 1)


def validate(workload_path: str):
    """Load and check a workload; SaturnInputError (one line, naming the job) when a job fits no node."""
    from saturn_airflow.spec.workload import load_workload

    if not workload_path:
        raise SaturnInputError("no workload given: set the 'workload' param to the path of a workload YAML file")
    wl = load_workload(workload_path)
    biggest = max(n.gpus for n in wl.cluster.nodes)
    for job in wl.jobs:
        pars = wl.parallelisms_for(job)
        need = {p: _min_devices(p) for p in pars}
        if all(k > biggest for k in need.values()):
            raise SaturnInputError(
                f"job {job.name!r} fits no node: its parallelisms ({', '.join(f'{p} needs >= {k} devices' for p, k in need.items())}) "
                f"exceed the largest node ({biggest} devices: "
                + ", ".join(f"{n.name}={n.gpus}" for n in wl.cluster.nodes) + ")")
    return wl


def nodes_of(wl) -> list[dict]:
    return [{"name": n.name, "gpus": n.gpus, "gpu_type": n.gpu_type} for n in wl.cluster.nodes]


def pool_specs(nodes: list[dict]) -> list[dict]:
    """One Airflow pool per node, one slot per GPU (device)."""
    return [{"name": settings.pool_name(n["name"]), "slots": int(n["gpus"]),
             "description": f"saturn: GPUs of node {n['name']} ({n['gpus']} x {n.get('gpu_type') or 'device'})",
             "include_deferred": False} for n in nodes]


def pools_import_file(nodes: list[dict], path: str) -> str:
    """Write the pools of `nodes` in the format of `airflow pools import`."""
    data = {p["name"]: {"slots": p["slots"], "description": p["description"], "include_deferred": p["include_deferred"]}
            for p in pool_specs(nodes)}
    Path(path).write_text(json.dumps(data, indent=1))
    return path


def ensure_pools_rest(base_url: str, nodes: list[dict], *, login: Optional[str] = None, password: Optional[str] = None,
                      token: Optional[str] = None, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Create or resize each node's pool through Airflow's public REST API (/api/v2/pools).

    Airflow 3 blocks metadata-DB access from task code, so the REST API is the supported way; the
    credentials come from the `saturn_api` connection (see docs/airflow.md).
    """
    import httpx  # installed with Airflow; only this step needs it

    base = base_url.rstrip("/")
    with httpx.Client(base_url=base, timeout=30) as client:
        if token is None and login:
            r = client.post("/auth/token", json={"username": login, "password": password or ""})
            if r.status_code >= 400:
                raise RuntimeError(f"Airflow API login as {login!r} at {base} failed: {r.status_code} {r.text[:200]}")
            token = r.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        done = []
        for p in pool_specs(nodes):
            r = client.get(f"/api/v2/pools/{p['name']}", headers=headers)
            if r.status_code in (401, 403):
                raise RuntimeError(f"Airflow API at {base} refused pool access ({r.status_code}); set the "
                                   "'saturn_api' connection (login/password of a user allowed to edit pools)")
            body = {"name": p["name"], "slots": p["slots"], "description": p["description"],
                    "include_deferred": p["include_deferred"]}
            if r.status_code == 404:
                r = client.post("/api/v2/pools", json=body, headers=headers)
                action = "created"
            elif r.status_code == 200 and (r.json().get("slots") != p["slots"]):
                r = client.patch(f"/api/v2/pools/{p['name']}", json=body, headers=headers)
                action = "resized"
            else:
                action = "exists"
            if r.status_code >= 400:
                raise RuntimeError(f"pool {p['name']}: {r.status_code} {r.text[:300]}")
            log(f"pool {p['name']}: {action} ({p['slots']} slots)")
            done.append({**p, "action": action})
        return done


# --------------------------------------------------------------------------- profiling and solving
def merge_tables(tables: list[ProfileTable], cluster) -> ProfileTable:
    """Union of per-node profile tables (configs deduplicated by identity), over the workload's cluster."""
    jobs: dict[str, dict] = {}
    for t in tables:
        for j in t.jobs:
            entry = jobs.setdefault(j.name, {"name": j.name, "configs": {}})
            for c in j.configs:
                entry["configs"].setdefault(c.key(), c.model_dump(mode="json", exclude_none=True))
    data = {"cluster": cluster.model_dump(mode="json") if hasattr(cluster, "model_dump") else cluster,
            "jobs": [{"name": e["name"], "configs": list(e["configs"].values())} for e in jobs.values()]}
    return parse_profile_table(data, source="merged profile table")


def table_rel(plan_id: str) -> str:
    return f"tables/{plan_id}.json"


def stage(store: Store, plan: Plan, table: Optional[ProfileTable], table_ref: Optional[str] = None) -> None:
    """Keep a solved plan (and the table it came from) until the publish step."""
    if table is not None:
        store.write_json(table_rel(plan.plan_id), json.loads(table.to_json()))
        table_ref = table_rel(plan.plan_id)
    data = plan.model_dump(mode="json")
    data["table_ref"] = table_ref
    store.write_json(f"staged/{plan.plan_id}.json", data)


def staged(store: Store, plan_id: str) -> Plan:
    data = store.read_json(f"staged/{plan_id}.json")
    if data is None:
        raise KeyError(f"no staged plan {plan_id!r} in {store.url}")
    return parse_plan(data, source=f"staged plan {plan_id}")


def plan_table_of(store: Store, plan: Plan) -> ProfileTable:
    ref = (plan.model_extra or {}).get("table_ref") or table_rel(plan.plan_id)
    data = store.read_json(ref)
    if data is None:
        raise KeyError(f"the profile table of plan {plan.plan_id} ({ref}) is missing from {store.url}")
    return parse_profile_table(data, source=ref)


def publish(store: Store, plan_id: str, *, check: bool = True) -> Plan:
    """Publish a staged plan (a child supersedes its parent); idempotent for a retry of the same step."""
    plan = staged(store, plan_id)
    ps = PlanStore(store)
    if plan_id in ps.ids():
        return ps.get(plan_id)
    if check:
        table = plan_table_of(store, plan) if not plan.parent_plan_id else None
        if table is not None:
            check_plan(plan, table)
    ps.publish(plan)
    return plan


# --------------------------------------------------------------------------- events
def record_event(store: Store, workload: str, event: dict) -> None:
    """Append one job event (start / end of a training attempt) to the workload's log stream."""
    store.append(keys.events_stream(workload), event)


def events(store: Store, workload: str) -> list[dict]:
    return store.read_log(keys.events_stream(workload))


# --------------------------------------------------------------------------- training decisions
def start_decision(store: Store, plan: Plan, job: str) -> tuple[str, str]:
    """Before (and again after leasing) a training task: ('run'|'done'|'skip', why)."""
    ps, prog = PlanStore(store), ProgressStore(store)
    rec = prog.get(plan.workload, job) or {}
    if rec.get("state") == "done":
        return "done", f"job {job} already finished (under plan {rec.get('plan_id')}); not running it again"
    child_id = ps.superseded_by(plan.plan_id)
    if child_id:
        child = ps.get(child_id)
        if job in ((child.model_extra or {}).get("kept") or []):
            return "run", f"plan superseded by {child_id}, which keeps {job} running here"
        return "skip", f"plan {plan.plan_id} was superseded by {child_id} before {job} started; it runs there"
    return "run", "ok"


def preempt_check(store: Store, plan: Plan, job: str) -> Optional[str]:
    """While a job runs: the id of a newer plan that preempts it, else None."""
    ps = PlanStore(store)
    child_id = ps.superseded_by(plan.plan_id)
    if not child_id:
        return None
    child = ps.get(child_id)
    if job in ((child.model_extra or {}).get("kept") or []):
        return None
    return child_id


def mark_failed(store: Store, plan: Plan, job: str, message: str) -> None:
    """A training task's last attempt failed before or around the runner (e.g. a lease timeout): record
    it, so the drift watch counts the job as finished instead of waiting for it forever."""
    prog = ProgressStore(store)
    rec = prog.get(plan.workload, job) or {}
    if rec.get("state") in ("running", "done"):
        return
    now = time.time()
    prog.put(plan.workload, job, {**rec, "plan_id": plan.plan_id, "state": "failed", "updated_at": now,
                                  "finished_at": now, "error": message[:500]})


# --------------------------------------------------------------------------- drift watch
def drift_settings(plan: Plan, depth: int = 0) -> dict[str, float]:
    """Thresholds of a plan: what its lineage was published with (planning params), else the [saturn]
    settings, doubled for every re-plan already made in the lineage (`depth`): a re-planned sweep
    re-plans again only on growing evidence, never on the noise of a busy machine."""
    d = (plan.model_extra or {}).get("drift") or {}
    factor = 2.0 ** max(0, depth)
    return {"threshold": factor * float(d.get("threshold") if d.get("threshold") is not None else settings.drift_threshold()),
            "min_s": factor * float(d.get("min_s") if d.get("min_s") is not None else settings.drift_min_s())}


class RateWindow:
    """Recent rates (steps/s) from successive progress records: the speed now, not the average since start."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self.samples: dict[str, list[tuple[float, int]]] = {}

    def update(self, records: dict[str, Optional[dict]]) -> dict[str, float]:
        rates: dict[str, float] = {}
        for job, rec in records.items():
            if not rec or rec.get("state") != "running" or rec.get("updated_at") is None:
                self.samples.pop(job, None)
                continue
            t, step = float(rec["updated_at"]), int(rec.get("step") or 0)
            hist = self.samples.setdefault(job, [])
            if hist and (step < hist[-1][1] or t < hist[-1][0]):
                hist.clear()  # a restart (resumed elsewhere): start over
            if not hist or t > hist[-1][0]:
                hist.append((t, step))
            while len(hist) > 2 and t - hist[1][0] >= self.window_s:
                hist.pop(0)
            t_old, s_old = hist[0]
            if t - t_old >= min(self.window_s, 10.0) and step > s_old:
                rates[job] = (step - s_old) / (t - t_old)
        return rates


def drift_step(store_url: str, plan_id: str, t0: float, *, threshold: Optional[float] = None,
               min_s: Optional[float] = None, max_replans: int = 5, now: Optional[float] = None,
               window: Optional[RateWindow] = None) -> Optional[dict]:
    """One look of the drift watch: an event dict when the watch should end (kind drift|done|superseded), else None.

    `window` (kept by the caller across looks) turns successive records into recent rates."""
    store = Store(store_url)
    ps, prog = PlanStore(store), ProgressStore(store)
    plan = ps.get(plan_id)
    child = ps.superseded_by(plan_id)
    if child:
        return {"kind": "superseded", "plan_id": plan_id, "message": f"plan {plan_id} was superseded by {child}"}
    depth = len(ps.lineage(plan_id)) - 1
    th = drift_settings(plan, depth)
    from saturn_airflow.control.replan import with_leased_jobs

    records = with_leased_jobs(store, plan, prog.all(plan.workload))  # tasks starting up count as running
    rates = window.update(records) if window is not None else {}
    report = assess(plan, records, time.time() if now is None else now, t0,
                    threshold=th["threshold"] if threshold is None else threshold,
                    min_s=th["min_s"] if min_s is None else min_s, rates=rates)
    if report.all_done:
        return {"kind": "done", "plan_id": plan_id, "message": report.summary() + ": " + report.reason,
                "report": report.to_dict()}
    if report.should_replan:
        if depth >= max_replans:
            return None  # keep watching until done, without re-planning again
        return {"kind": "drift", "plan_id": plan_id, "message": report.summary() + ": " + report.reason,
                "reason": report.reason, "report": report.to_dict()}
    return None


def replan_conf(event: dict) -> dict[str, Any]:
    """The planning DAG's conf for a re-plan of the plan the drift event is about."""
    rep = event.get("report") or {}
    rates = {j: p.get("rate_steps_per_s") for j, p in (rep.get("jobs") or {}).items()
             if p.get("state") == "running" and p.get("rate_steps_per_s")}
    drift = {k: rep.get(k) for k in ("planned_makespan_s", "projected_makespan_s", "ratio", "done", "running",
                                     "pending", "failed", "now", "t0")}
    drift["rates"] = rates
    drift["samples"] = {j: [p["updated_at"], p["step"]] for j, p in (rep.get("jobs") or {}).items()
                        if p.get("state") == "running" and p.get("updated_at")}
    return {"replan_of": event["plan_id"], "reason": event.get("reason", "drift"), "drift": drift}
