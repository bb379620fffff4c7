"""A training task's decisions: run, skip (superseded) or nothing to do (done); preempt; record a failure."""

from __future__ import annotations

from typing import Optional

from saturn_airflow.spec.plan import Plan
from saturn_airflow.store.records import PlanStore, ProgressStore, Store


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
    """A training task's last attempt failed before or around the runner (e.g. a lease timeout)."""
    prog = ProgressStore(store)
    rec = prog.get(plan.workload, job) or {}
    if rec.get("state") not in ("running", "done"):
        prog.mark_failed(plan.workload, job, plan_id=plan.plan_id, message=message)
