"""The one projection of a plan's remaining schedule, shared by the drift watch, the re-plan, the
Gantt page and `saturn show`.

It replays the plan the way Airflow executes it: a job starts as soon as the jobs it takes GPUs over
from (`after`) have ended and not before now; a running job ends when its remaining steps are done
at its steady rate (`control.rates.estimate`); a job without a steady rate yet (starting, warming up)
or not started takes its planned runtime, scaled to the steps it still has. Times are seconds from
`t0` (epoch seconds), the plan's start.

Alongside, the reference: the same replay with every job at its profiled speed from now on (and a
running job credited with the progress its profiled speed would have made since its last record),
slowed by what every node shares (the smallest node factor: a whole machine that runs slower than at
profiling time). What has already happened (late starts, Airflow's dispatch latency, restarts after a
fault, jobs that finished late) and a slowdown common to all nodes are in both; the difference is
what the observed speeds (one slow job, a stall, one slower node among others) will still cost, which
is what a re-plan can act on.

Whose slowdown applies to whom: a job's own steady rate only ever moves its own projection. Jobs
that have not run keep their profiled speed unless the evidence says the whole node slowed: at
least two jobs running on that node have a steady rate, and every one of them is slower than
profiled by more than `node_min_slowdown` (a co-tenant, thermal throttling, a busier machine than
at profiling time slow everyone; a slow data loader or an unlucky config slows one job). Then the
node's factor is the smallest of those slowdowns, applied to the jobs planned on that node.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from saturn_airflow.control.rates import RateEstimate, RateWindow, estimate
from saturn_airflow.spec.plan import Assignment, Plan
from saturn_airflow.spec.profile_table import Config, ProfileTable
from saturn_airflow.spec.progress import JobState, ProgressRecord, parse_records

NODE_MIN_SLOWDOWN = 1.1


# --------------------------------------------------------------------------- the profile of a job
def config_of(table: Optional[ProfileTable], a: Assignment) -> Optional[Config]:
    """The profiled config an assignment runs in (None without a table, or when it is not in it)."""
    if table is None:
        return None
    try:
        jp = table.job(a.job)
    except KeyError:
        return None
    for c in jp.configs:
        if c.parallelism == a.parallelism and c.gpus == a.gpus and c.knobs == a.knobs:
            return c
    return None


def profiled_step_s(c: Config, total: int) -> float:
    """Profiled seconds per step of a config: its `step_s` when the profiler recorded it, else runtime/steps."""
    extra = c.model_extra or {}
    if extra.get("step_s"):
        return float(extra["step_s"])
    return c.runtime_s / max(1, total)


def profiled_startup_s(c: Optional[Config]) -> float:
    return float(((c.model_extra or {}).get("startup_s") or 0.0) if c is not None else 0.0)


def profiled_warmup_s(c: Optional[Config]) -> Optional[float]:
    v = (c.model_extra or {}).get("warmup_s") if c is not None else None
    return float(v) if v else None


def plan_start_step(plan: Plan, job: str) -> int:
    """The step a job was at when `plan` was made (a re-plan plans the remaining steps only)."""
    return int(((plan.model_extra or {}).get("start_steps") or {}).get(job) or 0)


# --------------------------------------------------------------------------- states
def job_state(plan: Plan, job: str, record: Union[ProgressRecord, dict, None]) -> JobState:
    """The state of `job` as `plan` sees it: done (anywhere, ever, or stopped early), running (anywhere), failed (for
    good, under this plan), else pending (never started, preempted, interrupted and to be retried,
    or failed under an older plan: this plan runs or resumes it)."""
    rec = record if isinstance(record, ProgressRecord) or record is None else ProgressRecord.parse(record)
    if rec is None:
        return JobState.PENDING
    if rec.state in (JobState.DONE, JobState.RUNNING):
        return rec.state
    if rec.state == JobState.STOPPED:  # successive halving stopped it for good: as finished as done
        return JobState.DONE
    if rec.state == JobState.FAILED and rec.plan_id == plan.plan_id:
        return JobState.FAILED
    return JobState.PENDING


# --------------------------------------------------------------------------- the projection
@dataclasses.dataclass
class JobProjection:
    job: str
    state: str  # pending | running | done | failed (JobState values)
    start_s: float
    end_s: float
    planned_end_s: float
    step: int = 0
    total: int = 0
    rate_steps_per_s: Optional[float] = None  # the steady rate used (None: warming up or not running)
    updated_at: Optional[float] = None  # of the record the step comes from (epoch s)
    node: str = ""
    slowdown: Optional[float] = None  # observed step time / profiled step time (running jobs with a rate)
    rate_note: str = ""
    ref_end_s: float = 0.0  # the same job's end if everything ran at profiled speed from here on


@dataclasses.dataclass
class Projection:
    plan_id: str
    now: float
    t0: float
    planned_makespan_s: float
    projected_makespan_s: float
    jobs: dict[str, JobProjection]
    node_slowdown: dict[str, float]  # node -> factor applied to its jobs that have not run (1.0: none)
    groups: dict[str, list[str]]  # done / failed / running / pending -> jobs
    reference_makespan_s: float = 0.0  # the same schedule with every job at its profiled speed from now on
    common_slowdown: float = 1.0  # the slowdown every node shares (min of node_slowdown): in the reference too

    def end_at(self, job: str) -> float:
        return self.t0 + self.jobs[job].end_s

    @property
    def end_epoch(self) -> float:
        return self.t0 + self.projected_makespan_s


def node_factor(slowdowns: list[float], node_min_slowdown: float = NODE_MIN_SLOWDOWN) -> float:
    """A node's slowdown from the slowdowns of the jobs observed running on it: the smallest of them
    when there are at least two and every one is above `node_min_slowdown`, else 1.0 (see above)."""
    return min(slowdowns) if len(slowdowns) >= 2 and min(slowdowns) > node_min_slowdown else 1.0


def _planned_step_s(a: Assignment, cfg: Optional[Config], total: int, at_plan: int) -> Optional[float]:
    if cfg is not None:
        return profiled_step_s(cfg, total)
    work = a.runtime_s - profiled_startup_s(cfg)
    return work / at_plan if at_plan > 0 and work > 0 else None


def project(plan: Plan, records: dict[str, Any], now: float, t0: float, *, table: Optional[ProfileTable] = None,
            rates: Optional[dict[str, Union[float, RateEstimate, None]]] = None,
            window: Optional[RateWindow] = None, node_min_slowdown: float = NODE_MIN_SLOWDOWN) -> Projection:
    """Project `plan` from its jobs' progress `records` (job -> record dict or ProgressRecord) at `now`.

    `rates` (job -> steps/s) overrides the estimate for those jobs (a re-plan passes the rates the
    drift watch acted on); every other job's rate is `estimate(record)` under `window`.
    """
    window = window or RateWindow()
    recs = parse_records(records)
    rates = rates or {}
    now_rel = max(0.0, now - t0)
    assignments = sorted(plan.assignments, key=lambda a: (a.start_s, a.job))
    states = {a.job: job_state(plan, a.job, recs.get(a.job)) for a in assignments}
    cfgs = {a.job: config_of(table, a) for a in assignments}

    # steady rates and slowdowns of the running jobs
    est: dict[str, Optional[float]] = {}
    planned_step_s: dict[str, Optional[float]] = {}
    notes: dict[str, str] = {}
    slow: dict[str, float] = {}
    for a in assignments:
        rec = recs.get(a.job)
        if states[a.job] != JobState.RUNNING or rec is None:
            continue
        given = rates.get(a.job)
        if isinstance(given, RateEstimate):
            r, note = given.rate, given.why
        elif given:
            r, note = float(given), "given"
        else:
            e = estimate(rec, window.with_profile(profiled_warmup_s(cfgs[a.job])))
            r, note = e.rate, e.why
        est[a.job], notes[a.job] = (r if r and r > 0 else None), note
        total = rec.total or 0
        planned_step_s[a.job] = _planned_step_s(a, cfgs[a.job], total, max(0, total - plan_start_step(plan, a.job)))
        if est[a.job] and planned_step_s[a.job]:
            slow[a.job] = (1.0 / est[a.job]) / planned_step_s[a.job]
    node_slowdown = {node: node_factor([slow[a.job] for a in assignments if a.node == node and a.job in slow],
                                       node_min_slowdown)
                     for node in sorted({a.node for a in assignments})}
    # what every node shares (a machine-wide slowdown) no re-plan can fix: the reference runs at it too
    common = min(node_slowdown.values(), default=1.0)

    proj: dict[str, JobProjection] = {}
    groups: dict[str, list[str]] = {"done": [], "failed": [], "running": [], "pending": []}
    for a in assignments:
        rec = recs.get(a.job) or ProgressRecord()
        state = states[a.job]
        groups[state.value].append(a.job)
        step, total = rec.step, rec.total
        at_plan = max(1, (total or 0) - plan_start_step(plan, a.job))
        startup = profiled_startup_s(cfgs[a.job])
        work = max(0.0, a.runtime_s - startup)
        rate = est.get(a.job)
        if state in (JobState.DONE, JobState.FAILED):
            end = ref_end = float(rec.finished_at or rec.updated_at or now) - t0
            start = float(rec.started_at or now) - t0
        elif state == JobState.RUNNING:
            start = float(rec.started_at or now) - t0
            if rate and total:
                end = now_rel + max(0, total - step) / rate
                ref_end = end
                if planned_step_s.get(a.job):  # at profiled speed it would also have kept going since its record
                    ref_step_s = planned_step_s[a.job] * common
                    since = max(0.0, now - float(rec.updated_at or now)) / ref_step_s
                    ref_end = now_rel + max(0.0, total - step - since) * ref_step_s
            else:  # no steady rate yet: the plan's runtime for the steps this launch has to do...
                left = (total - rec.start_step) / at_plan if total else 1.0
                end = ref_end = max(now_rel, start + startup + work * min(1.0, max(0.0, left)))
                if total and planned_step_s.get(a.job):  # ...but no sooner than its steps left allow from now
                    end = max(end, now_rel + max(0, total - step) * planned_step_s[a.job])  # (a stall shows)
        else:
            left = (total - step) / at_plan if total and step else 1.0
            duration = startup + work * min(1.0, max(0.0, left))
            ready = max([proj[b].end_s for b in a.after if b in proj] + [now_rel])
            ref_ready = max([proj[b].ref_end_s for b in a.after if b in proj] + [now_rel])
            start, end = ready, ready + startup + (duration - startup) * node_slowdown.get(a.node, 1.0)
            ref_end = ref_ready + startup + (duration - startup) * common
        proj[a.job] = JobProjection(a.job, state.value, start, end, a.end_s, step, total, rate, rec.updated_at,
                                    a.node, slow.get(a.job), notes.get(a.job, ""), ref_end)
    projected = max([p.end_s for p in proj.values()] + [0.0])
    reference = max([p.ref_end_s for p in proj.values()] + [0.0])
    return Projection(plan.plan_id, now, t0, plan.makespan_s, projected, proj, node_slowdown, groups, reference,
                      common)
