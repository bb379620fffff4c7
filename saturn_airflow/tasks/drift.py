"""The drift watch's steps: one look at real progress against the plan, and the re-plan it asks for."""

from __future__ import annotations

import time
from typing import Any, Optional

from saturn_airflow import settings
from saturn_airflow.control.drift import DriftWatch, assess
from saturn_airflow.control.rates import RateWindow
from saturn_airflow.errors import SaturnError
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


def drift_step(store_url: str, plan_id: str, t0: float, *, threshold: Optional[float] = None,
               min_s: Optional[float] = None, max_replans: Optional[int] = None, now: Optional[float] = None,
               watch: Optional[DriftWatch] = None) -> Optional[dict]:
    """One look of the drift watch: an event dict when the watch should end (kind drift|rung|done|superseded), else None.

    `watch` (kept by the caller across looks) holds the consecutive late looks; without one a single
    late look is enough (tests, `poke`)."""
    store = Store(store_url)
    ps = PlanStore(store)
    plan = ps.get(plan_id)
    prog = ProgressStore(store, sweep=plan.sweep)
    child = ps.superseded_by(plan_id)
    if child:
        return {"kind": "superseded", "plan_id": plan_id, "message": f"plan {plan_id} was superseded by {child}"}
    from saturn_airflow.control import segments

    # rung re-plans are part of successive halving, not evidence of drift: they do not raise the thresholds
    depth = sum(1 for p in ps.lineage(plan_id)[1:] if not segments.is_rung_replan(p))
    th = drift_settings(plan, depth)
    from saturn_airflow.control.replan import with_leased_jobs
    from saturn_airflow.tasks.planning import plan_table_of

    records = with_leased_jobs(store, plan, prog.all(plan.workload))  # tasks starting up count as running
    if segments.section(plan) is not None:  # successive halving: losers stop, idle devices ask for a re-plan
        from saturn_airflow.tasks import rungs

        event = rungs.look(store, plan, records)
        if event is not None:
            return event
        records = segments.records_for_drift(plan, records)
    try:
        table = plan_table_of(store, plan)
    except (SaturnError, ValueError):
        table = None  # profiled speeds unknown: the plan's runtimes stand in for them
    report = assess(plan, records, time.time() if now is None else now, t0,
                    threshold=th["threshold"] if threshold is None else threshold,
                    min_s=th["min_s"] if min_s is None else min_s, table=table, window=RateWindow.from_settings())
    if report.all_done:
        return {"kind": "done", "plan_id": plan_id, "message": report.summary() + ": " + report.reason,
                "report": report.to_dict()}
    fire = watch.look(report) if watch is not None else report.should_replan
    if fire:
        if depth >= (settings.max_replans() if max_replans is None else max_replans):
            return None  # keep watching until done, without re-planning again
        looks = f" (late on {watch.streak} consecutive looks)" if watch is not None else ""
        return {"kind": "drift", "plan_id": plan_id, "message": report.summary() + ": " + report.reason + looks,
                "reason": report.reason, "report": report.to_dict(),
                "late_looks": list(watch.late_at) if watch is not None else [report.now]}
    return None


def new_drift_watch() -> DriftWatch:
    """The consecutive-looks state of one drift watch, from the [saturn] settings."""
    return DriftWatch(checks=settings.drift_checks(), span_s=settings.drift_window_s())


def replan_conf(event: dict) -> dict[str, Any]:
    """The planning DAG's conf for a re-plan of the plan the drift event is about."""
    rep = event.get("report") or {}
    rates = {j: p.get("rate_steps_per_s") for j, p in (rep.get("jobs") or {}).items()
             if p.get("state") == "running" and p.get("rate_steps_per_s")}
    drift = {k: rep.get(k) for k in ("planned_makespan_s", "projected_makespan_s", "ratio", "done", "running",
                                     "pending", "failed", "now", "t0")}
    drift["rates"] = rates
    drift["kind"] = event.get("kind", "drift")  # drift | rung (successive halving)
    return {"replan_of": event["plan_id"], "reason": event.get("reason", "drift"), "drift": drift}
