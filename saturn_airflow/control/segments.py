"""Rung segments: how successive halving lives inside the plan, the drift watch and the re-plan.

A plan of an early-stop workload schedules each job's work up to its next rung (a segment), not its
whole run: the first plan holds every job's first segment, so all of a group reaches rung 1 before
any job spends time past it. A job that reaches the end of its segment checkpoints and pauses
(state "paused"). Its group's verdicts (control/early_stop.py) then say, per job, stop (state
"stopped": never resumed, not failed, not lost), promote (its next segment gets planned) or wait.

A rung re-plan plans the remaining work when devices fall idle and something could use them: the
promoted jobs' next segments, sized for the cluster they now share with fewer jobs, and the running
jobs, kept where they run or preempted and resumed on other devices under another parallelism, by
the same keep-or-preempt rule as drift re-plans (control/replan.py does both; this module only
hands it the segments: every job's work counted up to the end of its current segment).

The plan carries what every reader needs in its `early_stop` key:
  {metric, goal, keep, rungs, groups, steps, nodes, table_ref,
   segments: {job: {"from": step, "to": step}},     the work of each assignment
   stopped: {job: verdict}, waiting: [job, ...]}     decided before this plan was made
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional

from saturn_airflow.control.early_stop import PROMOTE, STOP, Verdict, decide_all
from saturn_airflow.spec.early_stop import TRAIN_LOSS, Halving
from saturn_airflow.spec.plan import Assignment, Plan
from saturn_airflow.spec.profile_table import JobProfile, ProfileTable

PAUSED, STOPPED = "paused", "stopped"
KEY = "early_stop"


# ---- what a plan says -------------------------------------------------------------------------

def section(plan: Plan) -> Optional[dict]:
    """The plan's early-stop section, or None for a plan without successive halving."""
    es = (plan.model_extra or {}).get(KEY)
    return es if isinstance(es, dict) and es.get("segments") is not None else None


def halving_of(plan: Plan) -> Optional[Halving]:
    es = section(plan)
    return None if es is None else Halving.model_validate(es)


def target(plan: Plan, job: str) -> Optional[int]:
    """The step this plan trains `job` up to (None: the job's own steps, a plan without segments)."""
    es = section(plan)
    seg = (es or {}).get("segments", {}).get(job)
    return int(seg["to"]) if seg else None


def is_rung_replan(plan: Plan) -> bool:
    return bool((plan.model_extra or {}).get("replan", {}).get("kind") == "rung")


# ---- progress records seen through segments ---------------------------------------------------

def finished_here(plan: Plan, job: str, rec: Optional[dict]) -> bool:
    """Whether this plan has nothing left to do for `job`: it is done or stopped, or it paused at (or
    past) the end of this plan's segment for it."""
    rec = rec or {}
    state = rec.get("state")
    if state in ("done", STOPPED):
        return True
    end = target(plan, job)
    return state == PAUSED and end is not None and int(rec.get("step") or 0) >= end


def records_for_drift(plan: Plan, records: dict[str, Optional[dict]]) -> dict[str, Optional[dict]]:
    """The records as the drift projection must read them under a segmented plan: a job finished here
    counts as done, and a running job's total is its segment's end (what this plan planned)."""
    if section(plan) is None:
        return records
    out = dict(records)
    for a in plan.assignments:
        rec = records.get(a.job)
        if not rec:
            continue
        if finished_here(plan, a.job, rec):
            out[a.job] = {**rec, "state": "done", "finished_at": rec.get("finished_at") or rec.get("updated_at")}
        elif rec.get("state") == "running" and target(plan, a.job) is not None:
            out[a.job] = {**rec, "total": min(int(rec.get("total") or target(plan, a.job)), target(plan, a.job))}
    return out


# ---- metric values at rungs -------------------------------------------------------------------

def rung_values(halving: Halving, metric_records: dict[str, dict]) -> dict[str, dict[int, float]]:
    """job -> {rung step: value} from the jobs' results records (held-out points at rung steps)."""
    rungs = set(halving.rungs)
    out: dict[str, dict[int, float]] = {}
    for job, rec in (metric_records or {}).items():
        if not isinstance(rec, dict) or halving.group_of(job) is None:
            continue
        vals = {}
        for p in rec.get("points") or []:
            step = p.get("step")
            if step not in rungs:
                continue
            v = p.get("train_loss") if halving.metric == TRAIN_LOSS else (p.get("values") or {}).get(halving.metric)
            if isinstance(v, (int, float)):
                vals[int(step)] = float(v)
        out[job] = vals
    return out


def final_values(halving: Halving, metric_records: dict[str, dict]) -> dict[str, Optional[float]]:
    """job -> its metric at its last step (None until it has one)."""
    out: dict[str, Optional[float]] = {}
    for job, steps in halving.steps.items():
        rec = (metric_records or {}).get(job) or {}
        out[job] = None
        for p in rec.get("points") or []:
            if p.get("step") == steps:
                v = p.get("train_loss") if halving.metric == TRAIN_LOSS else (p.get("values") or {}).get(halving.metric)
                out[job] = float(v) if isinstance(v, (int, float)) else None
    return out


def verdicts(halving: Halving, metric_records: dict[str, dict], records: dict[str, Optional[dict]]) -> dict[str, Verdict]:
    """Every grouped job's verdict now. A job failed for good can no longer arrive anywhere."""
    gone = {j for j, r in (records or {}).items() if (r or {}).get("state") == "failed"}
    return decide_all(halving.groups, halving.rungs, halving.keep, halving.goal,
                      rung_values(halving, metric_records), gone)


def to_stop(verdict: dict[str, Verdict], records: dict[str, Optional[dict]]) -> list[str]:
    """Losers not yet marked stopped (a loser is always paused at its rung: segments end there)."""
    return sorted(j for j, v in verdict.items() if v.action == STOP
                  and (records.get(j) or {}).get("state") in (PAUSED, "preempted"))


def runnable(plan: Plan, verdict: dict[str, Verdict], records: dict[str, Optional[dict]]) -> list[str]:
    """Promoted jobs paused at a rung whose next segment this plan does not hold."""
    out = []
    for j, v in verdict.items():
        rec = records.get(j) or {}
        if v.action != PROMOTE or rec.get("state") != PAUSED:
            continue
        end = target(plan, j)
        if end is not None and end > int(rec.get("step") or 0) and any(a.job == j for a in plan.assignments):
            continue  # this plan runs its next segment already
        out.append(j)
    return sorted(out)


# ---- when a rung re-plan is due ---------------------------------------------------------------

def _devices(node: Optional[str], ids: Iterable) -> set[tuple[str, int]]:
    return {(node, int(g)) for g in ids or [] if str(g).lstrip("-").isdigit()}


def rung_event(plan: Plan, records: dict[str, Optional[dict]], verdict: dict[str, Verdict], *,
               restart_overhead_s: float = 10.0, now: Optional[float] = None) -> Optional[dict]:
    """A re-plan request (kind "rung") when devices are idle and something could use them, else None.

    Idle: held by no running job and promised to no assignment of this plan still to run. Use for
    them: a promoted job's next segment, or (when a job of this plan just left them) a running job
    that could resume on more devices, if its segment has more than twice a restart's worth left.
    """
    es = section(plan)
    if es is None:
        return None
    nodes = es.get("nodes") or {}
    node_of = {a.job: a.node for a in plan.assignments}
    everything = {(n, g) for n, count in nodes.items() for g in range(int(count))}
    busy: set[tuple[str, int]] = set()
    running = []
    for job, rec in records.items():
        if (rec or {}).get("state") == "running":
            running.append(job)
            busy |= _devices(rec.get("node") or node_of.get(job) or next(iter(nodes), None), rec.get("device_ids"))
    reserved: set[tuple[str, int]] = set()
    ended: set[tuple[str, int]] = set()
    for a in plan.assignments:
        rec = records.get(a.job) or {}
        if finished_here(plan, a.job, rec) or rec.get("state") == "failed" and rec.get("plan_id") == plan.plan_id:
            ended |= _devices(a.node, a.gpu_ids)
        elif rec.get("state") != "running":
            reserved |= _devices(a.node, a.gpu_ids)
    idle = sorted(everything - busy - reserved)
    if not idle:
        return None
    promoted = runnable(plan, verdict, records)
    reason = None
    if promoted:
        reason = f"rung: {', '.join(promoted)} promoted and {len(idle)} device(s) idle"
    elif set(idle) & ended and running:
        worth = []
        for j in running:
            rec = records[j]
            rate, step, total = rec.get("rate_steps_per_s"), int(rec.get("step") or 0), int(rec.get("total") or 0)
            left_s = (total - step) / rate if rate and total else None
            if left_s is None or left_s > 2 * restart_overhead_s:
                worth.append(j)
        if worth:
            reason = (f"rung: {len(idle)} device(s) freed at a rung while {', '.join(sorted(worth))} run(s): "
                      "re-plan whether to resize")
    if reason is None:
        return None
    return {"kind": "rung", "plan_id": plan.plan_id, "reason": reason, "message": f"plan {plan.plan_id}: {reason}",
            "promoted": promoted, "idle": [list(d) for d in idle], "running": sorted(running),
            "at": time.time() if now is None else now}


def sweep_left(plan: Plan, verdict: dict[str, Verdict], records: dict[str, Optional[dict]]) -> bool:
    """Whether any job of the sweep still has work: a grouped job neither stopped nor done."""
    halving = halving_of(plan)
    if halving is None:
        return False
    for job in halving.steps:
        state = (records.get(job) or {}).get("state")
        v = verdict.get(job)
        if state in ("done", STOPPED, "failed") or (v is not None and v.action == STOP):
            continue
        return True
    return False


# ---- planning segments ------------------------------------------------------------------------

def _startup(c) -> float:
    return float((c.model_extra or {}).get("startup_s") or 0.0)


def scaled_table(table: ProfileTable, ends: dict[str, int], steps: dict[str, int]) -> ProfileTable:
    """The table as if each job in `ends` had `ends[job]` steps in all (start-up kept whole): what a
    plan of segments from step 0 solves, and what the re-plan counts remaining work against."""
    jobs = []
    for jp in table.jobs:
        if jp.name not in ends:
            continue
        total = max(1, int(steps.get(jp.name) or ends[jp.name]))
        share = min(1.0, ends[jp.name] / total)
        configs = [c.model_copy(update={"runtime_s": max(1e-3, _startup(c) + (c.runtime_s - _startup(c)) * share)})
                   for c in jp.configs]
        jobs.append(JobProfile(name=jp.name, configs=configs))
    return ProfileTable(cluster=table.cluster, jobs=jobs)


def new_section(halving: Halving, table: ProfileTable, segments: dict[str, dict], *, table_ref: Optional[str],
                stopped: Optional[dict] = None, waiting: Iterable[str] = ()) -> dict:
    return {**halving.model_dump(mode="json"), "nodes": {n.name: n.gpus for n in table.cluster.nodes},
            "table_ref": table_ref, "segments": segments, "stopped": dict(stopped or {}),
            "waiting": sorted(waiting)}


def first_plan(table: ProfileTable, halving: Halving, *, workload: str, solver: Optional[str] = None,
               time_limit: Optional[float] = None, table_ref: Optional[str] = None,
               progress: Optional[Callable[[str], None]] = None) -> tuple[Plan, ProfileTable]:
    """The first plan of an early-stop sweep: every job's first segment (grouped jobs up to their
    first rung, others whole), and the segment table it is valid against."""
    from saturn_airflow.planner import plan_table

    ends = {j.name: halving.segment_end(j.name, 0) for j in table.jobs}
    seg_table = scaled_table(table, ends, halving.steps)
    plan = plan_table(seg_table, solver=solver, time_limit=time_limit, workload=workload, progress=progress)
    data = plan.model_dump(mode="json")
    data[KEY] = new_section(halving, table, {j: {"from": 0, "to": e} for j, e in ends.items()}, table_ref=table_ref)
    return Plan.model_validate(data), seg_table


def _segment_of(halving: Halving, job: str, rec: dict) -> tuple[int, int]:
    """(from, to) of the job's next piece of work: a running job's is the one it runs (its record's
    total is the launch's target), any other's from where it stands to its next rung."""
    step = int(rec.get("step") or 0)
    if rec.get("state") == "running" and rec.get("total"):
        return step, int(rec["total"])
    return step, halving.segment_end(job, step)


def plan_view(plan: Plan, lineage: list[Plan], jobs: list[str]) -> Plan:
    """`plan` holding exactly `jobs`, each with its assignment in this plan, else its latest in the lineage."""
    latest: dict[str, Assignment] = {}
    for p in lineage + [plan]:
        for a in p.assignments:
            latest[a.job] = a
    data = plan.model_dump(mode="json")
    data["assignments"] = [latest[j].model_dump(mode="json") for j in jobs if j in latest]
    return Plan.model_validate(data)


def replan_segments(table: ProfileTable, plan: Plan, lineage: list[Plan], records: dict[str, Optional[dict]],
                    verdict: dict[str, Verdict], *, reason: str, kind: str = "rung", **kw) -> Any:
    """Plan the remaining segments of an early-stop sweep (control/replan.replan_plan on the segment view).

    Planned: running jobs (keep or preempt), promoted paused jobs (their next segment), jobs of this
    plan not started yet, preempted ones. Left out: done, stopped, losers, and jobs that wait for the
    rest of their group. `table` is the full-run profile table; `lineage` the plan's ancestors.
    """
    from saturn_airflow.control.replan import replan_plan

    halving = halving_of(plan)
    es = section(plan)
    losers = {j for j, v in verdict.items() if v.action == STOP}
    names = {j.name for j in table.jobs}
    todo: list[str] = []
    waiting: list[str] = []
    view: dict[str, Optional[dict]] = {}
    ends: dict[str, int] = {}
    starts: dict[str, int] = {}
    for job in sorted(names):
        rec = dict(records.get(job) or {})
        state = rec.get("state")
        grouped = halving.group_of(job) is not None
        if state in ("done", STOPPED) or job in losers or (state == "failed" and rec.get("plan_id") == plan.plan_id):
            continue
        if state == PAUSED and grouped:
            v = verdict.get(job)
            if v is None or v.action != PROMOTE:
                waiting.append(job)
                continue
        in_lineage = any(a.job == job for p in lineage + [plan] for a in p.assignments)
        if not in_lineage:
            continue
        frm, to = _segment_of(halving, job, rec)
        if to <= frm and state != "running":
            continue
        todo.append(job)
        starts[job], ends[job] = frm, to
        if rec:
            if state != "running":
                rec["state"] = "preempted"  # resumable from its checkpoint under the new plan
            rec["total"] = to
        view[job] = rec or None
    seg_table = scaled_table(table, ends, halving.steps)
    pv = plan_view(plan, lineage, todo)
    stopped = dict(es.get("stopped") or {})
    for j in sorted(losers):
        v = verdict[j]
        stopped[j] = {"rung": v.rung, "rank": v.rank, "arrived": v.arrived, "quota": v.quota, "value": v.value}
    res = replan_plan(seg_table, pv, view, ends, reason=reason, **kw)
    if res.plan is not None:
        data = res.plan.model_dump(mode="json")
        data[KEY] = new_section(halving, table, {j: {"from": starts[j], "to": ends[j]} for j in todo
                                                 if any(a.job == j for a in res.plan.assignments)},
                                table_ref=es.get("table_ref"), stopped=stopped, waiting=waiting)
        data.setdefault("replan", {})["kind"] = kind
        res.plan = Plan.model_validate(data)
    return res


__all__ = ["section", "halving_of", "target", "finished_here", "records_for_drift", "rung_values", "final_values",
           "verdicts", "to_stop", "runnable", "rung_event", "sweep_left", "scaled_table", "first_plan",
           "replan_segments", "plan_view", "is_rung_replan", "PAUSED", "STOPPED"]
