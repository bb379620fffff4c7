"""Successive halving against the stores: the first plan of segments, the watch's look at rungs
(losers marked stopped, a rung re-plan asked for), and the rung re-plan itself.

Used by the planning DAG's solve step, the drift watch and any other runner of plans (the benchmark's
local executor); the decisions themselves are control/early_stop.py and control/segments.py.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from saturn_airflow import settings
from saturn_airflow.control import segments
from saturn_airflow.control.early_stop import Verdict
from saturn_airflow.spec.early_stop import Halving
from saturn_airflow.spec.plan import Plan
from saturn_airflow.spec.profile_table import ProfileTable, parse_profile_table
from saturn_airflow.store.files import PlanStore, ProgressStore, Store


def full_table_rel(plan_id: str) -> str:
    return f"tables/{plan_id}-full.json"


def first_plan(store: Store, table: ProfileTable, halving: Halving, *, workload: str, solver: Optional[str] = None,
               time_limit: Optional[float] = None, progress: Optional[Callable[[str], None]] = None
               ) -> tuple[Plan, ProfileTable]:
    """The sweep's first plan (every job's first segment) and the segment table it is valid against;
    the full-run table goes to the store beside it, where every rung re-plan reads it."""
    import json

    from saturn_airflow.planner import plan_table

    plan, seg_table = segments.first_plan(table, halving, workload=workload, solver=solver, time_limit=time_limit,
                                          progress=progress)
    rel = full_table_rel(plan.plan_id)
    store.write_json(rel, json.loads(table.to_json()))
    data = plan.model_dump(mode="json")
    data[segments.KEY]["table_ref"] = rel
    # what the page compares with: every job to the end, each on all GPUs of a node, one after another
    data["baseline_makespan_s"] = plan_table(table, baseline="current-practice", workload=workload).makespan_s
    return Plan.model_validate(data), seg_table


def full_table(store: Store, plan: Plan) -> ProfileTable:
    rel = (segments.section(plan) or {}).get("table_ref")
    data = store.read_json(rel) if rel else None
    if data is None:
        from saturn_airflow.errors import NotFoundError

        raise NotFoundError(f"the full profile table of plan {plan.plan_id} ({rel}) is missing from {store.url}")
    return parse_profile_table(data, source=rel)


def lineage_ids(ps: PlanStore, plan: Plan) -> set[str]:
    return {p.plan_id for p in ps.lineage(plan.plan_id)}


def stop_losers(progress: ProgressStore, plan: Plan, verdict: dict[str, Verdict],
                records: dict[str, Optional[dict]]) -> list[str]:
    """Mark every loser paused at its rung "stopped" (idempotent): never resumed, not failed, not lost."""
    out = []
    for job in segments.to_stop(verdict, records):
        v = verdict[job]
        rec = records.get(job) or {}
        now = time.time()
        progress.put(plan.workload, job, {**rec, "state": segments.STOPPED, "updated_at": now,
                                          "finished_at": rec.get("finished_at") or now,
                                          "stopped": {"rung": v.rung, "rank": v.rank, "arrived": v.arrived,
                                                      "quota": v.quota, "value": v.value, "plan_id": plan.plan_id}})
        records[job] = progress.get(plan.workload, job)
        out.append(job)
    return out


def state_now(store: Store, plan: Plan, records: Optional[dict[str, Optional[dict]]] = None
              ) -> tuple[dict[str, Optional[dict]], dict[str, Verdict], set[str]]:
    """This sweep's records, the verdicts now, and the lineage's plan ids."""
    from saturn_airflow.store.metrics import MetricsStore

    from saturn_airflow.control.replan import with_leased_jobs

    ps = PlanStore(store)
    ids = lineage_ids(ps, plan)
    if records is None:  # a task holding its job's lease counts as running while its runner starts
        records = with_leased_jobs(store, plan, ProgressStore(store, sweep=plan.sweep).all(plan.workload))
    recs = segments.of_lineage(records, ids)
    verdict = segments.verdicts(segments.halving_of(plan), MetricsStore(store, sweep=plan.sweep).all(plan.workload),
                                recs, ids)
    return recs, verdict, ids


def look(store: Store, plan: Plan, records: Optional[dict[str, Optional[dict]]] = None) -> Optional[dict]:
    """One look of the watch at a segmented plan: losers marked stopped; a rung event when due, else None."""
    recs, verdict, _ = state_now(store, plan, records)
    stop_losers(ProgressStore(store, sweep=plan.sweep), plan, verdict, recs)
    return segments.rung_event(plan, recs, verdict, restart_overhead_s=settings.restart_overhead_s())


def replan_from_store(store: Store, plan_id: str, *, owner: str, reason: str = "rung", kind: str = "rung",
                      rates: Optional[dict[str, float]] = None, **kw):
    """Claim the one re-plan of `plan_id`, mark losers stopped, plan the remaining segments; the caller
    publishes `.plan` (None: nothing to plan, the message says why)."""
    from saturn_airflow.control.replan import ReplanResult, claim_replan

    ps = PlanStore(store)
    plan = ps.get(plan_id)
    prog = ProgressStore(store, sweep=plan.sweep)
    if ps.superseded_by(plan_id):
        return ReplanResult(None, "none", {}, {}, f"plan {plan_id} is already superseded by {ps.superseded_by(plan_id)}")
    if not claim_replan(ps, plan_id, owner):
        return ReplanResult(None, "none", {}, {}, f"another re-plan of {plan_id} holds the claim; leaving it to that one")
    recs, verdict, ids = state_now(store, plan)
    stop_losers(prog, plan, verdict, recs)
    lineage = [p for p in ps.lineage(plan_id) if p.plan_id != plan_id]
    for key, name in (("restart_overhead_s", "restart_overhead_s"), ("min_gain", "min_preempt_gain")):
        kw.setdefault(key, settings.value(name))
    return segments.replan_segments(full_table(store, plan), plan, lineage, recs, verdict, reason=reason, kind=kind,
                                    rates=rates, **kw)


__all__ = ["first_plan", "full_table", "look", "replan_from_store", "stop_losers", "state_now", "full_table_rel"]
