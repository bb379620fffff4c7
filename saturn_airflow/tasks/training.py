"""A training task's decisions: run, skip (superseded) or nothing to do (done, stopped early, or at the end
of this plan's segment); preempt; record a failure."""

from __future__ import annotations

from typing import Optional

from saturn_airflow.spec.plan import Plan
from saturn_airflow.spec.progress import JobState
from saturn_airflow.store.records import PlanStore, ProgressStore, Store
from saturn_airflow.tasks import events as job_events


def start_decision(store: Store, plan: Plan, job: str) -> tuple[str, str]:
    """Before (and again after leasing) a training task: ('run'|'done'|'skip', why).

    "done" only for a job finished in this plan's sweep (this plan or an ancestor): a new sweep of
    the same workload trains every job again."""
    ps, prog = PlanStore(store), ProgressStore(store, sweep=plan.sweep)
    rec = prog.get(plan.workload, job) or {}
    if rec.get("state") == "done":
        return "done", (f"job {job} already finished in sweep {plan.sweep} (under plan {rec.get('plan_id')}); "
                        "not running it again")
    from saturn_airflow.control import segments

    if rec.get("state") == segments.STOPPED:
        return "done", f"job {job} was stopped early at step {rec.get('step')} (successive halving); never resumed"
    if segments.finished_here(plan, job, rec):
        return "done", f"job {job} reached step {rec.get('step')}, the end of its segment in this plan (a rung)"
    child_id = ps.superseded_by(plan.plan_id)
    if child_id:
        child = ps.get(child_id)
        if job in ((child.model_extra or {}).get("kept") or []):
            return "run", f"plan superseded by {child_id}, which keeps {job} running here"
        return "skip", f"plan {plan.plan_id} was superseded by {child_id} before {job} started; it runs there"
    return "run", "ok"


def open_attempt(store: Store, plan: Plan, job: str) -> Optional[dict]:
    """The job's last start event in this sweep that no end event followed, if any: an attempt whose task
    was killed before it could record how the job ended."""
    last = None
    for e in job_events.events(store, plan.workload, sweep=plan.sweep):
        if e.get("job") == job:
            last = e if e.get("event") == "start" else None
    return last


def close_open_attempt(store: Store, plan: Plan, job: str) -> Optional[dict]:
    """Record the end of an attempt whose task was killed after its training finished (the ranks ran on
    and wrote the job done): the events log then still holds every finished job exactly once. Called
    under the job's lease, so two tasks never close one attempt twice. Returns the end event written."""
    start = open_attempt(store, plan, job)
    if start is None:
        return None
    rec = ProgressStore(store, sweep=plan.sweep).get(plan.workload, job) or {}
    end = {"event": "end", "job": job, "plan_id": start.get("plan_id"), "status": rec.get("state", JobState.DONE),
           "started_at": start.get("t"), "ended_at": rec.get("updated_at", start.get("t")),
           "device_ids": start.get("device_ids"), "recorded_by": "a later attempt: the task that ran it was killed"}
    job_events.record_event(store, plan.workload, end, sweep=plan.sweep)
    return end


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
    """A training task's last attempt failed (in the runner, or around it, e.g. a lease timeout): the
    job failed for good under this plan. Recorded so the drift watch counts it as finished instead of
    waiting for it forever, and the plan's result task, the Gantt page and `saturn show` name it and
    the reason. The runner's own reason (an interrupted attempt's error) is kept when there is one."""
    prog = ProgressStore(store, sweep=plan.sweep)
    rec = prog.get(plan.workload, job) or {}
    if rec.get("state") in (JobState.RUNNING, JobState.DONE):
        return  # someone else runs it (a lease timeout while another task holds the job) or it finished
    reason = rec.get("error") if rec.get("state") == JobState.INTERRUPTED and rec.get("error") else message
    prog.mark_failed(plan.workload, job, plan_id=plan.plan_id, message=reason)


def plan_result(store: Store, plan: Plan) -> tuple[list[str], dict[str, str]]:
    """After every training task of `plan` ended: (jobs done or handed to a newer plan, {job: why it
    did not finish}). A job moved to a child plan is that plan's to finish; under successive halving a
    job stopped early, or paused at the end of this plan's segment for it, is finished here too."""
    from saturn_airflow.control import segments

    ps, prog = PlanStore(store), ProgressStore(store, sweep=plan.sweep)
    child_id = ps.superseded_by(plan.plan_id)
    moved = {a.job for a in ps.get(child_id).assignments} if child_id else set()
    ok, bad = [], {}
    for a in sorted(plan.assignments, key=lambda a: a.job):
        rec = prog.get(plan.workload, a.job) or {}
        state = rec.get("state") or JobState.PENDING.value
        if state == JobState.DONE or a.job in moved or segments.finished_here(plan, a.job, rec):
            ok.append(a.job)
            continue
        where = f" at step {rec.get('step')}/{rec.get('total')}" if rec.get("total") else ""
        bad[a.job] = f"{state}{where}: {rec.get('error') or 'its task ended without finishing it'}"
    return ok, bad
