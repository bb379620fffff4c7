"""The drift watch's steps: one look at real progress against the plan, and the re-plan it asks for."""

from __future__ import annotations

import time
from typing import Any, Optional

from saturn_airflow import settings
from saturn_airflow.control.drift import assess
from saturn_airflow.spec.plan import Plan
from saturn_airflow.store.records import PlanStore, ProgressStore, Store


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
               min_s: Optional[float] = None, max_replans: Optional[int] = None, now: Optional[float] = None,
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
        if depth >= (settings.max_replans() if max_replans is None else max_replans):
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
