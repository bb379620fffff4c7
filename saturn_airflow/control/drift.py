"""Drift: compare real progress with a plan and decide whether re-planning is worth it.

`assess` is one look: the shared projection (`control.projection.project`) against the plan, with
the thresholds. `DriftWatch` is the decision over successive looks: a re-plan needs the lateness to
hold over `checks` consecutive looks spanning at least one rate window, so one noisy window (the tail
of a warm-up, a burst of a co-tenant) never re-plans, while a real slowdown re-plans within
`checks` looks of the projection crossing the threshold.

Only lateness triggers a re-plan: a job that finishes early is absorbed by the DAG itself (its
successors start on its completion), while a late one is what re-planning (moving or resizing the
remaining work) can fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from saturn_airflow.control.projection import JobProjection, job_state, project  # noqa: F401 (re-exported)
from saturn_airflow.control.rates import RateWindow
from saturn_airflow.spec.plan import Plan
from saturn_airflow.spec.profile_table import ProfileTable
from saturn_airflow.spec.progress import JobState

FINISHED = (JobState.DONE.value, JobState.FAILED.value)
# what one look concluded; the drift trigger logs the reason whenever this changes
VERDICTS = ("done", "warming_up", "on_time", "late_no_choice", "late")


@dataclasses.dataclass
class DriftReport:
    plan_id: str
    now: float
    t0: float
    planned_makespan_s: float
    projected_makespan_s: float
    threshold: float
    min_s: float
    should_replan: bool  # this look is late past both thresholds (DriftWatch decides on several looks)
    reason: str
    done: list[str]
    failed: list[str]
    running: list[str]
    pending: list[str]
    jobs: dict[str, JobProjection]
    node_slowdown: dict[str, float] = dataclasses.field(default_factory=dict)
    reference_makespan_s: float = 0.0  # the schedule at profiled speeds from now on (control.projection)
    verdict: str = ""  # one of VERDICTS: which branch of `assess` the reason comes from

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


def assess(plan: Plan, records: dict[str, Optional[dict]], now: float, t0: float, *,
           threshold: float = 0.1, min_s: float = 60.0, rates: Optional[dict[str, float]] = None,
           table: Optional[ProfileTable] = None, window: Optional[RateWindow] = None) -> DriftReport:
    """One look: project the plan's makespan from progress `records` (job -> latest record) at `now`.

    `rates` (job -> steps/s) overrides the steady-rate estimate of those jobs; `table` (the plan's
    profile table) gives profiled step times, start-up and warm-up; `window` how rates are measured.
    """
    proj = project(plan, {j: r for j, r in records.items() if r}, now, t0, table=table, rates=rates,
                   window=window, node_min_slowdown=1.0 + threshold)
    groups = proj.groups
    planned, projected, reference = proj.planned_makespan_s, proj.projected_makespan_s, proj.reference_makespan_s
    # lateness a re-plan can act on: the observed speeds against the profiled ones, from now on (what
    # already happened, e.g. late starts or a restart after a fault, delays both alike); a run that is
    # late on the plan as a whole but at pace from here is left alone
    late = projected - max(reference, planned)
    remaining = groups["running"] + groups["pending"]
    # Evidence first: until some job has a steady rate or finished, lateness only measures how long
    # Airflow and the runners take to start and warm up, which no re-plan can fix.
    evidence = bool(groups["done"] or groups["failed"] or any(
        proj.jobs[j].rate_steps_per_s for j in groups["running"]))
    late_enough = bool(remaining) and evidence and late > threshold * planned and late > min_s
    choice = has_choice(plan, proj.groups, table)
    should = late_enough and choice
    if not remaining:
        verdict, reason = "done", "every job has finished"
    elif not evidence:
        verdict, reason = "warming_up", "no job has reported a steady rate (past its warm-up) yet"
    elif late_enough and not choice:
        verdict = "late_no_choice"
        reason = (f"projected makespan {projected:.0f} s is {late:.0f} s late, but a re-plan has no choice: every "
                  f"job left is running in its only profiled config on the only node it fits")
    elif should:
        verdict = "late"
        slow = max((p for p in proj.jobs.values() if p.state in ("running", "pending")),
                   key=lambda p: p.end_s - p.planned_end_s)
        node = {n: f for n, f in proj.node_slowdown.items() if f > 1.0}
        reason = (f"projected makespan {projected:.0f} s is {late:.0f} s ({late / max(planned, 1e-9):.0%}) later than "
                  f"the planned {planned:.0f} s" + (f" and than the {reference:.0f} s at profiled speeds from now"
                                                     if reference > planned else "")
                  + f" (threshold {threshold:.0%} and {min_s:.0f} s); latest job {slow.job} "
                  f"projected to end at {slow.end_s:.0f} s instead of {slow.planned_end_s:.0f} s"
                  + (f"; whole node slower: {', '.join(f'{n} {f:.2f}x' for n, f in node.items())}" if node else ""))
    else:
        verdict = "on_time"
        reason = (f"within threshold: projected makespan {projected:.0f} s against the planned {planned:.0f} s and "
                  f"the {reference:.0f} s at profiled speeds from now: {max(0.0, late):.0f} s late (threshold "
                  f"{threshold:.0%} and {min_s:.0f} s)")
    return DriftReport(plan.plan_id, now, t0, planned, projected, threshold, min_s, should, reason,
                       groups["done"], groups["failed"], groups["running"], groups["pending"], proj.jobs,
                       proj.node_slowdown, reference, verdict)


def has_choice(plan: Plan, groups: dict[str, list[str]], table: Optional[ProfileTable]) -> bool:
    """Whether a re-plan could change anything: a job still to start (its place, size and order are
    open), or a running job with another profiled config (it could be preempted and resized) or
    another node its config fits (it could be preempted and moved, resuming from its checkpoint). A
    plan whose every remaining job runs in its only config on the only node it fits re-plans into the
    same schedule."""
    if groups["pending"] or table is None:
        return True
    from saturn_airflow.control.projection import config_of

    for job in groups["running"]:
        try:
            configs = table.job(job).configs
        except KeyError:
            return True
        a = plan.assignment(job)
        current = config_of(table, a)
        if any(c is not current for c in configs):
            return True
        if current is not None and any(n.name != a.node and current.fits(n) for n in table.cluster.nodes):
            return True
    return False


class DriftWatch:
    """Successive looks at one plan: re-plan only when `checks` consecutive looks are late and span at
    least `span_s` seconds (one rate window), so the lateness rests on more than one window of data."""

    def __init__(self, checks: int = 2, span_s: float = 5.0):
        self.checks, self.span_s = max(1, int(checks)), float(span_s)
        self.late_at: list[float] = []  # `now` of the consecutive late looks so far
        self.last: Optional[DriftReport] = None  # the latest look (its verdict and reason are logged)
        self.changed = False  # the latest look's verdict differs from the one before (or is the first)

    def look(self, report: DriftReport) -> bool:
        self.changed = self.last is None or report.verdict != self.last.verdict
        self.last = report
        if not report.should_replan:
            self.late_at = []
            return False
        self.late_at.append(report.now)
        return len(self.late_at) >= self.checks and self.late_at[-1] - self.late_at[0] >= self.span_s * (self.checks > 1)

    @property
    def streak(self) -> int:
        return len(self.late_at)
