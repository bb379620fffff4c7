"""Drift: compare real progress with a plan and decide whether re-planning is worth it. Pure functions.

The projection replays the plan the way Airflow executes it: a job starts as soon as the jobs it
takes GPUs over from (`after`) have ended and not before now; a running job ends when its remaining
steps are done at its observed rate; a job not yet started takes its planned runtime. The projected
makespan is the latest projected end, measured from the plan's start `t0` (epoch seconds).

Only lateness triggers a re-plan: a job that finishes early is absorbed by the DAG itself (its
successors start on its completion), while a late one is what re-planning (moving or resizing the
remaining work) can fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from saturn_airflow.spec.plan import Plan

FINISHED = ("done", "failed")


@dataclasses.dataclass
class JobProjection:
    job: str
    state: str  # pending | running | done | failed
    start_s: float
    end_s: float
    planned_end_s: float
    step: int = 0
    total: int = 0
    rate_steps_per_s: Optional[float] = None
    updated_at: Optional[float] = None  # of the record the step comes from (epoch s)


@dataclasses.dataclass
class DriftReport:
    plan_id: str
    now: float
    t0: float
    planned_makespan_s: float
    projected_makespan_s: float
    threshold: float
    min_s: float
    should_replan: bool
    reason: str
    done: list[str]
    failed: list[str]
    running: list[str]
    pending: list[str]
    jobs: dict[str, JobProjection]

    @property
    def all_done(self) -> bool:
        return not self.running and not self.pending

    @property
    def delta_s(self) -> float:
        return self.projected_makespan_s - self.planned_makespan_s

    @property
    def ratio(self) -> float:
        return self.projected_makespan_s / self.planned_makespan_s if self.planned_makespan_s > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(all_done=self.all_done, delta_s=self.delta_s, ratio=self.ratio)
        return d

    def summary(self) -> str:
        return (f"plan {self.plan_id}: projected makespan {self.projected_makespan_s:.0f} s vs planned "
                f"{self.planned_makespan_s:.0f} s ({self.ratio:.2f}x); done {len(self.done)}, running "
                f"{len(self.running)}, pending {len(self.pending)}, failed {len(self.failed)}")


def job_state(plan: Plan, job: str, record: Optional[dict]) -> str:
    """The state of `job` for `plan`: done (anywhere, ever), running (anywhere), failed (under this plan), pending."""
    if not record:
        return "pending"
    state = record.get("state")
    if state == "done":
        return "done"
    if state == "running":
        return "running"
    if state == "failed" and record.get("plan_id") == plan.plan_id:
        return "failed"
    return "pending"  # preempted, or failed under an older plan: this plan runs (resumes) it


def assess(plan: Plan, records: dict[str, Optional[dict]], now: float, t0: float, *,
           threshold: float = 0.1, min_s: float = 60.0, rates: Optional[dict[str, float]] = None) -> DriftReport:
    """Project the plan's makespan from progress `records` (job -> latest record) at time `now`.

    `rates` (job -> steps/s) overrides the records' rates: the drift watch passes rates measured over
    a recent window, which follow a change of speed faster than the runner's average since start.
    """
    rates = rates or {}
    now_rel = max(0.0, now - t0)
    proj: dict[str, JobProjection] = {}
    groups: dict[str, list[str]] = {"done": [], "failed": [], "running": [], "pending": []}
    for a in sorted(plan.assignments, key=lambda a: (a.start_s, a.job)):
        rec = records.get(a.job) or {}
        state = job_state(plan, a.job, rec)
        groups[state].append(a.job)
        step, total = int(rec.get("step") or 0), int(rec.get("total") or 0)
        rate = rates.get(a.job) or rec.get("rate_steps_per_s")
        rate = float(rate) if rate else None
        if state in FINISHED:
            end = float(rec.get("finished_at") or rec.get("updated_at") or now) - t0
            start = float(rec.get("started_at") or now) - t0
        elif state == "running":
            start = float(rec.get("started_at") or now) - t0
            if rate and total:
                end = now_rel + max(0, total - step) / rate
            else:  # no rate yet: trust the plan's runtime, but a job can't end in the past
                end = max(now_rel, start + a.runtime_s)
        else:
            ready = max([proj[b].end_s for b in a.after if b in proj] + [now_rel])
            start, end = ready, ready + a.runtime_s
        proj[a.job] = JobProjection(a.job, state, start, end, a.end_s, step, total, rate, rec.get("updated_at"))
    planned = plan.makespan_s
    projected = max([p.end_s for p in proj.values()] + [0.0])
    late = projected - planned
    remaining = groups["running"] + groups["pending"]
    # Evidence first: until some job has reported a rate or finished, lateness only measures how long
    # Airflow and the runners take to start, which no re-plan can fix.
    evidence = bool(groups["done"] or groups["failed"] or any(
        proj[j].rate_steps_per_s for j in groups["running"]))
    should = bool(remaining) and evidence and late > threshold * planned and late > min_s
    if not remaining:
        reason = "every job has finished"
    elif not evidence:
        reason = "no job has reported progress yet"
    elif should:
        slow = max((p for p in proj.values() if p.state in ("running", "pending")),
                   key=lambda p: p.end_s - p.planned_end_s)
        reason = (f"projected makespan {projected:.0f} s is {late:.0f} s ({late / max(planned, 1e-9):.0%}) later than "
                  f"the planned {planned:.0f} s (threshold {threshold:.0%} and {min_s:.0f} s); latest job {slow.job} "
                  f"projected to end at {slow.end_s:.0f} s instead of {slow.planned_end_s:.0f} s")
    else:
        reason = f"within threshold: projected {projected:.0f} s vs planned {planned:.0f} s"
    return DriftReport(plan.plan_id, now, t0, planned, projected, threshold, min_s, should, reason,
                       groups["done"], groups["failed"], groups["running"], groups["pending"], proj)
