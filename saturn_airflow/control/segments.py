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


def nothing_waits_for(plan: Plan, job: str) -> bool:
    """Whether no job of `plan` takes its GPUs over from `job`: a promoted job may then train on past
    its rung in the same process (no relaunch) instead of pausing there."""
    return any(a.job == job for a in plan.assignments) and not any(job in a.after for a in plan.assignments)


def trains_on(plan: Plan, job: str, step: int, records: dict[str, Optional[dict]], *,
              restart_overhead_s: float = 10.0) -> bool:
    """Whether a job promoted at its rung `step` should train on in the same process (no relaunch): no
    job of `plan` waits for its devices, and no idle device would shorten its next segment by more than
    a restart (then it pauses, and the rung re-plan resumes it on more devices)."""
    es, h = section(plan), halving_of(plan)
    if es is None or h is None or not nothing_waits_for(plan, job):
        return es is None and nothing_waits_for(plan, job)
    rec = dict(records.get(job) or {})
    rec.update(state="running", step=step, total=h.segment_end(job, step))
    probe = {**records, job: rec}
    idle = _idle(plan, probe)
    node = rec.get("node") or next((a.node for a in plan.assignments if a.job == job), None)
    free = sum(1 for n, _ in idle if node is None or n == node)
    if not free:
        return True
    gain = resize_gain_s(es, job, rec, free, restart_overhead_s)
    return gain is None or gain <= restart_overhead_s


def rung_gate(plan: Plan, job: str) -> Optional[str]:
    """The runner's gate for `job` under `plan`: "halving" for a grouped job of a segmented plan."""
    h = halving_of(plan)
    return "halving" if h is not None and h.group_of(job) else None


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
            if rec.get("leased_only"):  # the record is the paused one of its last segment: its times are not a pace
                out[a.job].update(updated_at=None, rate_steps_per_s=None, recent_rate_steps_per_s=None)
    return out


# ---- metric values at rungs -------------------------------------------------------------------

def _point_value(halving: Halving, point: dict) -> Optional[float]:
    v = point.get("train_loss") if halving.metric == TRAIN_LOSS else (point.get("values") or {}).get(halving.metric)
    return float(v) if isinstance(v, (int, float)) else None


def _points(rec: Any, plan_ids: Optional[set[str]]) -> list[dict]:
    """A results record's points, only those written under `plan_ids` (this sweep's plans) when given."""
    if not isinstance(rec, dict):
        return []
    return [p for p in rec.get("points") or [] if plan_ids is None or p.get("plan_id") in plan_ids]


def rung_values(halving: Halving, metric_records: dict[str, dict],
                plan_ids: Optional[set[str]] = None) -> dict[str, dict[int, float]]:
    """job -> {rung step: value} from the jobs' results records (held-out points at rung steps)."""
    rungs = set(halving.rungs)
    out: dict[str, dict[int, float]] = {}
    for job, rec in (metric_records or {}).items():
        if halving.group_of(job) is None:
            continue
        vals = {}
        for p in _points(rec, plan_ids):
            v = _point_value(halving, p)
            if p.get("step") in rungs and v is not None:
                vals[int(p["step"])] = v
        out[job] = vals
    return out


def rung_values_with_time(halving: Halving, metric_records: dict[str, dict], rung: int) -> dict[str, tuple[float, float]]:
    """job -> (value, time recorded) at one rung: the arrival order Ray Tune's rule depends on."""
    out = {}
    for job, rec in (metric_records or {}).items():
        for p in _points(rec, None):
            v = _point_value(halving, p)
            if p.get("step") == rung and v is not None:
                out[job] = (v, float(p.get("t") or 0.0))
    return out


def final_values(halving: Halving, metric_records: dict[str, dict],
                 plan_ids: Optional[set[str]] = None) -> dict[str, Optional[float]]:
    """job -> its metric at its last step (None until it has one)."""
    out: dict[str, Optional[float]] = {}
    for job, steps in halving.steps.items():
        out[job] = None
        for p in _points((metric_records or {}).get(job), plan_ids):
            if p.get("step") == steps:
                out[job] = _point_value(halving, p)
    return out


def verdicts(halving: Halving, metric_records: dict[str, dict], records: dict[str, Optional[dict]],
             plan_ids: Optional[set[str]] = None) -> dict[str, Verdict]:
    """Every grouped job's verdict now. A job failed for good can no longer arrive anywhere."""
    gone = {j for j, r in (records or {}).items() if (r or {}).get("state") == "failed"}
    return decide_all(halving.groups, halving.rungs, halving.keep, halving.goal,
                      rung_values(halving, metric_records, plan_ids), gone)


def of_lineage(records: dict[str, Optional[dict]], plan_ids: set[str]) -> dict[str, Optional[dict]]:
    """Only the records written under this sweep's plans: a record of an earlier sweep of the same
    workload name says nothing about this one."""
    return {j: r for j, r in (records or {}).items() if r and r.get("plan_id") in plan_ids}


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


def _idle(plan: Plan, records: dict[str, Optional[dict]], with_ended: bool = False):
    """The devices held by no running job and promised to no assignment of `plan` still to run (and,
    `with_ended`, the devices of this plan's finished assignments and the running jobs)."""
    nodes = (section(plan) or {}).get("nodes") or {}
    mine = {a.job: a for a in plan.assignments}
    everything = {(n, g) for n, count in nodes.items() for g in range(int(count))}
    busy: set[tuple[str, int]] = set()
    running = []
    for job, rec in records.items():
        if (rec or {}).get("state") == "running":
            running.append(job)
            a = mine.get(job)
            node = rec.get("node") or (a.node if a else next(iter(nodes), None))
            busy |= _devices(node, rec.get("device_ids") or (a.gpu_ids if a else []))
    reserved: set[tuple[str, int]] = set()
    ended: set[tuple[str, int]] = set()
    for a in plan.assignments:
        rec = records.get(a.job) or {}
        if finished_here(plan, a.job, rec) or rec.get("state") == "failed" and rec.get("plan_id") == plan.plan_id:
            ended |= _devices(a.node, a.gpu_ids)
        elif rec.get("state") != "running":
            reserved |= _devices(a.node, a.gpu_ids)
    idle = sorted(everything - busy - reserved)
    return (idle, ended, running) if with_ended else idle


def rung_event(plan: Plan, records: dict[str, Optional[dict]], verdict: dict[str, Verdict], *,
               restart_overhead_s: float = 10.0, now: Optional[float] = None) -> Optional[dict]:
    """A re-plan request (kind "rung") when devices are idle and something could use them, else None.

    Idle: held by no running job and promised to no assignment of this plan still to run. Use for
    them: a promoted job's next segment, or (when a job of this plan just left them) a running job
    that, by its profile and its pace here, would finish more than a restart's worth sooner on them.
    """
    es = section(plan)
    if es is None:
        return None
    idle, ended, running = _idle(plan, records, with_ended=True)
    if not idle:
        return None
    mine = {a.job: a for a in plan.assignments}
    promoted = runnable(plan, verdict, records)
    reason = None
    if promoted:
        reason = f"rung: {', '.join(promoted)} promoted and {len(idle)} device(s) idle"
    elif set(idle) & ended and running:
        worth = []
        for j in running:
            rec = records[j]
            node = rec.get("node") or (mine[j].node if j in mine else None)
            free = sum(1 for n, _ in idle if n == node) if node else len(idle)
            gain = resize_gain_s(es, j, rec, free, restart_overhead_s)
            if gain is not None and gain > restart_overhead_s:
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


def speeds(table: ProfileTable) -> dict[str, dict[str, list[float]]]:
    """job -> {GPU count: [whole-run seconds, start-up seconds]} of its fastest config at each count:
    enough for the watch to tell whether more devices could shorten a running job at all."""
    out: dict[str, dict[str, list[float]]] = {}
    for jp in table.jobs:
        best: dict[str, list[float]] = {}
        for c in jp.configs:
            key = str(c.gpus)
            if key not in best or c.runtime_s < best[key][0]:
                best[key] = [round(c.runtime_s, 3), round(_startup(c), 3)]
        out[jp.name] = best
    return out


def new_section(halving: Halving, table: ProfileTable, segments: dict[str, dict], *, table_ref: Optional[str],
                stopped: Optional[dict] = None, waiting: Iterable[str] = ()) -> dict:
    return {**halving.model_dump(mode="json"), "nodes": {n.name: n.gpus for n in table.cluster.nodes},
            "table_ref": table_ref, "segments": segments, "stopped": dict(stopped or {}),
            "waiting": sorted(waiting), "speeds": speeds(table)}


def resize_gain_s(es: dict, job: str, rec: dict, free: int, restart_overhead_s: float) -> Optional[float]:
    """Seconds a running job could save by restarting on its devices plus `free` more (positive: worth a
    re-plan), from the profile's fastest configs; None when the profile does not say."""
    sp = (es.get("speeds") or {}).get(job) or {}
    have = len(rec.get("device_ids") or []) or 1
    now, more = sp.get(str(have)), None
    for g in range(have + free, have, -1):
        if str(g) in sp:
            more = sp[str(g)]
            break
    steps = int((es.get("steps") or {}).get(job) or 0)
    if now is None or more is None or not steps:
        return None
    left = max(0, int(rec.get("total") or steps) - int(rec.get("step") or 0)) / steps
    stay = left * (now[0] - now[1])
    rate = rec.get("rate_steps_per_s")
    if rate:  # what it really does here beats the profile's estimate, slowdown included
        stay = max(0, int(rec.get("total") or steps) - int(rec.get("step") or 0)) / float(rate)
        slow = stay / max(1e-9, left * (now[0] - now[1]))
    else:
        slow = 1.0
    moved = more[1] + left * (more[0] - more[1]) * slow + restart_overhead_s
    return stay - moved


def expected_stages(table: ProfileTable, halving: Halving, *, solver: Optional[str] = None,
                    time_limit: float = 2.0) -> list[dict]:
    """The stages after the first rung as the quotas say they will be: after rung r, K_r survivors of
    each group (who they are is not known yet: each is the group's average job), planned on the whole
    cluster. What the sweep is expected to cost beyond the first plan, and how the survivors' share
    of the cluster grows; a rung re-plan later plans the real survivors."""
    from saturn_airflow.control.early_stop import quotas
    from saturn_airflow.planner import plan_table

    out = []
    bounds = list(halving.rungs) + [None]
    for i, rung in enumerate(halving.rungs):
        jobs = []
        for gi, members in enumerate(halving.groups.values()):
            k = quotas(len(members), halving.keep, len(halving.rungs))[i]
            profiles = [table.job(m) for m in members]
            by_key: dict[tuple, list] = {}
            for jp in profiles:
                end = bounds[i + 1] or halving.steps[jp.name]
                share = (end - rung) / max(1, halving.steps[jp.name])
                for c in jp.configs:
                    runtime = _startup(c) + (c.runtime_s - _startup(c)) * share
                    by_key.setdefault((c.parallelism, c.gpus, json_key(c.knobs), c.gpu_type), []).append(
                        c.model_copy(update={"runtime_s": max(1e-3, runtime)}))
            average = [cs[0].model_copy(update={"runtime_s": sum(c.runtime_s for c in cs) / len(cs)})
                       for cs in by_key.values() if len(cs) == len(profiles)]
            # stand-ins named by the group's index: a group's own name (its model and arguments) is no job name
            jobs += [JobProfile(name=f"group{gi + 1}.{k_i + 1}", configs=average) for k_i in range(k)]
        stage = plan_table(ProfileTable(cluster=table.cluster, jobs=jobs), solver=solver, time_limit=time_limit,
                           workload="expected")
        out.append({"after_rung": rung, "survivors": len(jobs), "makespan_s": round(stage.makespan_s, 3),
                    "gpus": sorted(a.gpus for a in stage.assignments)})
    return out


def json_key(knobs: dict) -> str:
    import json

    return json.dumps(knobs, sort_keys=True)


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
    stages = expected_stages(table, halving, solver=solver)
    data[KEY]["expected"] = stages
    data[KEY]["expected_sweep_s"] = round(plan.makespan_s + sum(st["makespan_s"] for st in stages), 3)
    return Plan.model_validate(data), seg_table


def _segment_of(halving: Halving, job: str, rec: dict, plans: dict[str, Plan]) -> tuple[int, int]:
    """(from, to) of the job's next piece of work: a running job's is the segment the plan running it
    gave it (else its record's total, the launch's target), any other's from where it stands to its
    next rung."""
    step = int(rec.get("step") or 0)
    if rec.get("state") == "running":
        running_under = plans.get(rec.get("plan_id"))
        end = target(running_under, job) if running_under is not None else None
        if end is None and not rec.get("leased_only"):
            end = int(rec.get("total") or 0) or None
        if end is not None:
            return step, end
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
    from saturn_airflow.control.replan import ReplanResult, replan_plan

    halving = halving_of(plan)
    es = section(plan)
    losers = {j for j, v in verdict.items() if v.action == STOP}
    names = {j.name for j in table.jobs}
    by_id = {p.plan_id: p for p in lineage + [plan]}
    todo: list[str] = []
    waiting: list[str] = []
    view: dict[str, Optional[dict]] = {}
    ends: dict[str, int] = {}
    starts: dict[str, int] = {}
    for job in sorted(names):
        rec = dict(records.get(job) or {})
        state = rec.get("state")
        grouped = halving.group_of(job) is not None
        # a running job is never left out: one whose rung value just came in pauses there by itself
        if state in ("done", STOPPED) or (job in losers and state != "running") \
                or (state == "failed" and rec.get("plan_id") == plan.plan_id):
            continue
        if state == PAUSED and grouped:
            v = verdict.get(job)
            if v is None or v.action != PROMOTE:
                waiting.append(job)
                continue
        in_lineage = any(a.job == job for p in lineage + [plan] for a in p.assignments)
        if not in_lineage:
            continue
        frm, to = _segment_of(halving, job, rec, by_id)
        if to <= frm and state != "running":
            continue
        todo.append(job)
        starts[job], ends[job] = frm, to
        if rec:
            if state != "running":
                rec["state"] = "preempted"  # resumable from its checkpoint under the new plan
            rec["total"] = to
        view[job] = rec or None
    if not todo:
        why = (f"nothing to plan now: {', '.join(waiting)} wait(s) for the rest of the group" if waiting
               else "nothing remains to plan: every job has finished or stopped")
        return ReplanResult(None, "none", {}, {}, why)
    seg_table = scaled_table(table, ends, halving.steps)
    pv = plan_view(plan, lineage, todo)
    stopped = dict(es.get("stopped") or {})
    for j in sorted(losers - set(todo)):
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
