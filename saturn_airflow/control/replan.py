"""Re-planning: observed state -> remaining-work profile table -> child plan. No Airflow import.

- Only remaining work is planned: finished jobs (done anywhere, or failed under the current plan)
  are left out, so a re-plan never re-runs them.
- Observed rates replace profiled ones: a job that ran at 1/3 of its profiled speed is assumed to
  keep doing so in every config (its slowdown factor scales all of its configs) on the node it ran
  on; on a cluster's other nodes it runs at their pace, so a re-plan may move it off a slow node
  (unless it was moved for being slow once already: then the slowdown is its own, everywhere).
- Running jobs are kept (pinned where they run, with their remaining time at the observed rate) or
  preempted (they restart from their checkpoint anywhere, paying a restart overhead), whichever plan
  has the shorter makespan; preempting must win by `min_gain` to be chosen.
- The child plan names its parent, the reason, the kept and the preempted jobs (extra plan keys),
  and `replan_solve` claims `replan-of-<parent>` in the PlanStore first, so two concurrent re-plans of
  one plan leave exactly one new version.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

from saturn_airflow import settings
from saturn_airflow.control.projection import config_of, node_factor, profiled_startup_s, project
from saturn_airflow.control.rates import RateWindow, estimate
from saturn_airflow.spec.plan import Plan, new_plan_id
from saturn_airflow.spec.profile_table import Config, JobProfile, ProfileTable
from saturn_airflow.spec.progress import JobState, ProgressRecord
from saturn_airflow.store.records import PlanStore, ProgressStore

SLOWDOWN_CLAMP = (0.05, 50.0)


@dataclasses.dataclass
class Observed:
    """What the re-plan knows about one job of the current plan."""

    job: str
    state: str  # pending | running | done | failed
    step: int
    total: int
    slowdown: float  # observed step time / profiled step time of the config it ran in (1.0: unobserved)
    rate_steps_per_s: Optional[float] = None
    node: Optional[str] = None  # where the slowdown was observed (None: not observed)


def _config_of(table: ProfileTable, plan: Plan, job: str) -> Optional[Config]:
    return config_of(table, plan.assignment(job))


def _step_s(c: Config, total: int) -> float:
    from saturn_airflow.control.projection import profiled_step_s

    return profiled_step_s(c, total)


def observe(plan: Plan, table: ProfileTable, records: dict[str, Optional[dict]], steps: dict[str, int],
            rates: Optional[dict[str, float]] = None, window: Optional[RateWindow] = None) -> dict[str, Observed]:
    """The observed state of every job of `plan`. `steps`: job -> total steps (from the workload);
    `rates`: steady rates (steps/s) the drift watch acted on, for jobs whose record has none now.

    Slowdowns come from the shared projection (`control.projection`): a job's own steady rate for a
    job that ran; for a job that has not, its node's factor, which is 1.0 unless every job observed
    on that node (at least two) runs slower than profiled."""
    window = window or RateWindow()
    now = time.time()
    proj = project(plan, {j: r for j, r in records.items() if r}, now, now, table=table, rates=rates, window=window)
    out: dict[str, Observed] = {}
    for a in plan.assignments:
        rec = ProgressRecord.parse(records.get(a.job)) or ProgressRecord()
        p = proj.jobs[a.job]
        state = p.state
        total = int(rec.total or steps.get(a.job) or 0)
        step = int(rec.step or 0)
        rate = p.rate_steps_per_s if state == JobState.RUNNING else None
        own = p.slowdown
        cfg = config_of(table, a)
        if own is None and state == JobState.PENDING and step > 0 and cfg is not None and total:
            last = estimate(rec, window)  # preempted or interrupted earlier: the rate it last ran at
            if last.known:
                own = (1.0 / last.rate) / _step_s(cfg, total)
        if own is not None:
            slowdown = min(max(own, SLOWDOWN_CLAMP[0]), SLOWDOWN_CLAMP[1])
        else:
            slowdown = proj.node_slowdown.get(a.node, 1.0) if state == JobState.PENDING else 1.0
        out[a.job] = Observed(a.job, state, step, total, slowdown if state in ("running", "pending") else 1.0, rate,
                              (rec.node or a.node) if own is not None else None)
    return out


def remaining_table(table: ProfileTable, plan: Plan, observed: dict[str, Observed], *, keep: set[str],
                    restart_overhead_s: Optional[float] = None) -> tuple[ProfileTable, dict[str, Any]]:
    """The remaining work as a profile table, plus the `pinned` map for the planner.

    `keep`: running jobs to leave where they run (their one config: the remaining time at the observed
    rate); every other unfinished job gets all its configs, scaled to its remaining steps and its
    observed slowdown, plus `restart_overhead_s` when it has already made progress.
    """
    restart_overhead_s = settings.restart_overhead_s() if restart_overhead_s is None else restart_overhead_s
    from saturn_airflow.planner import PinnedJob  # imported late: it is heavy

    jobs: list[JobProfile] = []
    pinned: dict[str, Any] = {}
    machine = min([o.slowdown for o in observed.values() if o.state in ("running", "pending")] or [1.0])
    for a in plan.assignments:
        ob = observed[a.job]
        if ob.state in ("done", "failed"):
            continue
        src = table.job(a.job)
        total = ob.total or 1
        left = max(0, total - ob.step)
        if a.job in keep and ob.state == "running":
            cfg = _config_of(table, plan, a.job)
            if ob.rate_steps_per_s:
                runtime = left / ob.rate_steps_per_s
            else:
                runtime = (cfg.runtime_s if cfg else a.runtime_s) * left / total
            c = Config(parallelism=a.parallelism, gpus=a.gpus, knobs=dict(a.knobs), runtime_s=max(runtime, 1e-3),
                       gpu_type=cfg.gpu_type if cfg else None)
            jobs.append(JobProfile(name=a.job, configs=[c]))
            pinned[a.job] = PinnedJob(node=a.node, gpu_ids=list(a.gpu_ids), start_s=0.0)
            continue
        overhead = restart_overhead_s if ob.step > 0 or ob.state == "running" else 0.0

        def scaled(c: Config, slowdown: float, **update) -> Config:
            # start-up (launch, model build) slows down with the machine too, not with a job's own data
            startup = profiled_startup_s(c) * max(1.0, min(slowdown, machine))
            runtime = startup + (c.runtime_s - profiled_startup_s(c)) * (left / total) * slowdown + overhead
            return c.model_copy(update={"runtime_s": max(runtime, 1e-3), **update})

        slow_node = _blamed_node(plan, ob)
        if slow_node is None:
            configs = [scaled(c, ob.slowdown) for c in src.configs]
        else:  # slower on that node only; elsewhere at the pace the other nodes' jobs show
            configs = [scaled(c, ob.slowdown, node=slow_node) for c in src.configs]
            for n in table.cluster.nodes:
                if n.name != slow_node:
                    configs += [scaled(c, _node_slowdown(observed, n.name), node=n.name) for c in src.configs]
        jobs.append(JobProfile(name=a.job, configs=configs))
    if not jobs:
        return None, {}
    return ProfileTable(cluster=table.cluster, jobs=jobs), pinned


def _blamed_node(plan: Plan, ob: Observed) -> Optional[str]:
    """The node a job's slowdown is blamed on, or None when it is the job's own.

    A job observed slower than profiled is first taken to suffer from its node (a straggler: thermal
    limits, a noisy neighbour), so a re-plan may move it to a node that runs its other jobs at speed.
    Once a job was moved for being slow and is slow again on its new node, the slowdown is its own and
    counts on every node (no job is bounced between nodes)."""
    if ob.node is None or ob.slowdown <= 1.0:
        return None
    moved = ((plan.model_extra or {}).get("replan") or {}).get("slow_on") or {}
    if ob.job in moved and moved[ob.job] != ob.node:
        return None
    return ob.node


def _node_slowdown(observed: dict[str, Observed], node: str) -> float:
    """How much slower than profiled a node runs its jobs (the projection's rule, `node_factor`)."""
    return node_factor([o.slowdown for o in observed.values() if o.node == node])


@dataclasses.dataclass
class ReplanResult:
    plan: Optional[Plan]
    option: str
    options: dict[str, float]  # option -> makespan
    observed: dict[str, Observed]
    message: str


def replan_plan(table: ProfileTable, plan: Plan, records: dict[str, Optional[dict]], steps: dict[str, int], *,
                solver: Optional[str] = None, time_limit: Optional[float] = None,
                restart_overhead_s: Optional[float] = None, min_gain: Optional[float] = None, reason: str = "",
                rates: Optional[dict[str, float]] = None, window: Optional[RateWindow] = None,
                log: Callable[[str], None] = lambda m: None) -> ReplanResult:
    """Plan the remaining work of `plan` both ways (keep running jobs / preempt them) and take the better."""
    from saturn_airflow.planner import plan_table

    time_limit = settings.time_limit() if time_limit is None else time_limit
    restart_overhead_s = settings.restart_overhead_s() if restart_overhead_s is None else restart_overhead_s
    min_gain = settings.min_preempt_gain() if min_gain is None else min_gain
    observed = observe(plan, table, records, steps, rates, window)
    running = sorted(j for j, o in observed.items() if o.state == "running")
    remaining = [j for j, o in observed.items() if o.state in ("running", "pending")]
    if not remaining:
        return ReplanResult(None, "none", {}, observed, "nothing remains to plan: every job has finished")
    options: dict[str, set[str]] = {"keep-all": set(running)}
    if running:
        options["preempt-all"] = set()
        if 1 < len(running) <= 4:
            for j in running:
                options[f"preempt-{j}"] = set(running) - {j}
    per_solve = max(1.0, time_limit / len(options))
    plans: dict[str, Plan] = {}
    for name, keep in options.items():
        sub, pinned = remaining_table(table, plan, observed, keep=keep, restart_overhead_s=restart_overhead_s)
        p = plan_table(sub, solver=solver, time_limit=per_solve, workload=plan.workload,
                       parent_plan_id=plan.plan_id, pinned=pinned)
        plans[name] = p
        log(f"re-plan option {name}: makespan {p.makespan_s:.1f} s (solver {p.solver.name} {p.solver.status})")
    spans = {k: p.makespan_s for k, p in plans.items()}
    best = min(spans, key=lambda k: (spans[k], k != "keep-all"))
    keep_span = spans["keep-all"]
    if best != "keep-all" and not (spans[best] < keep_span * (1 - min_gain) and spans[best] < keep_span - restart_overhead_s):
        best = "keep-all"  # preempting must win clearly: its estimate of the restart cost is only an estimate
    chosen = plans[best]
    kept = sorted(options[best])
    preempted = sorted(set(running) - options[best])
    extra = {
        **(plan.model_extra or {}),
        "reason": reason or "re-plan",
        "replan": {"option": best, "options": spans, "kept": kept, "preempted": preempted,
                   "done": sorted(j for j, o in observed.items() if o.state == "done"),
                   "failed": sorted(j for j, o in observed.items() if o.state == "failed"),
                   "slowdown": {j: round(o.slowdown, 3) for j, o in observed.items() if o.slowdown != 1.0},
                   "slow_on": {**(((plan.model_extra or {}).get("replan") or {}).get("slow_on") or {}),
                               **{j: o.node for j, o in observed.items() if o.node and o.slowdown > 1.0
                                  and o.state in ("running", "pending")}},
                   "at": time.time()},
        "kept": kept,
        "preempted": preempted,
        "start_steps": {j: o.step for j, o in observed.items() if o.state in ("running", "pending") and o.step},
    }
    data = chosen.model_dump(mode="json")
    data.update(extra)
    data["parent_plan_id"] = plan.plan_id
    data["plan_id"] = chosen.plan_id if chosen.plan_id != plan.plan_id else new_plan_id(plan.workload)
    child = Plan.model_validate(data)
    msg = (f"re-plan of {plan.plan_id}: option {best} (makespan {spans[best]:.1f} s; "
           + ", ".join(f"{k} {v:.1f} s" for k, v in spans.items()) + f"); kept {kept or '-'}, preempted {preempted or '-'}")
    return ReplanResult(child, best, spans, observed, msg)


def replan_claim_name(plan_id: str) -> str:
    return f"replan-of-{plan_id}"


def claim_replan(plan_store: PlanStore, plan_id: str, owner: str) -> bool:
    """True when `owner` (e.g. an Airflow run id) holds the one re-plan of `plan_id` (a retry of the same owner keeps it)."""
    name = replan_claim_name(plan_id)
    if plan_store.claim(name, {"owner": owner}):
        return True
    rec = plan_store.store.read_json(f"claims/{name}.json") or {}
    return rec.get("owner") == owner


def replan_depth(plan_store: PlanStore, plan_id: str) -> int:
    return len(plan_store.lineage(plan_id)) - 1


def replan_from_store(plan_store: PlanStore, progress: ProgressStore, table: ProfileTable, plan_id: str,
                      steps: dict[str, int], *, owner: str, **kw) -> ReplanResult:
    """Claim, then re-plan `plan_id` from the current progress records; the caller publishes `.plan`."""
    plan = plan_store.get(plan_id)
    if plan_store.superseded_by(plan_id):
        return ReplanResult(None, "none", {}, {}, f"plan {plan_id} is already superseded by {plan_store.superseded_by(plan_id)}")
    if not claim_replan(plan_store, plan_id, owner):
        return ReplanResult(None, "none", {}, {}, f"another re-plan of {plan_id} holds the claim; leaving it to that one")
    records = with_leased_jobs(plan_store.store, plan, progress.all(plan.workload))
    # the records' own steady rates now are the freshest; the drift watch's only fill in for a job that
    # has none any more (restarted since)
    window = RateWindow.from_settings()
    given = kw.pop("rates", None) or {}
    kw["rates"] = {j: r for j, r in given.items()
                   if r and not estimate(ProgressRecord.parse(records.get(j)), window).known}
    return replan_plan(table, plan, records, steps, window=window, **kw)


def with_leased_jobs(store, plan: Plan, records: dict[str, Optional[dict]]) -> dict[str, Optional[dict]]:
    """Count a job as running when a live task holds its job lease but its runner has not reported yet
    (process start-up takes seconds): re-planning must keep or preempt it, not plan it a second time."""
    from saturn_airflow.execution import leases

    out = dict(records)
    for a in plan.assignments:
        rec = out.get(a.job) or {}
        if rec.get("state") in ("running", "done"):
            continue
        holder = leases.holder(store, leases.job_key(plan.workload, a.job, sweep=plan.sweep))
        if holder and not leases.is_stale(holder) and holder.get("plan_id") == plan.plan_id:
            out[a.job] = {**rec, "state": "running", "plan_id": plan.plan_id, "step": int(rec.get("step") or 0),
                          "rate_steps_per_s": None, "started_at": holder.get("at"), "leased_only": True}
    return out
