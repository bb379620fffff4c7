"""Re-planning: observed state -> remaining-work profile table -> child plan. No Airflow import.

- Only remaining work is planned: finished jobs (done anywhere, or failed under the current plan)
  are left out, so a re-plan never re-runs them.
- Observed rates replace profiled ones: a job that ran at 1/3 of its profiled speed is assumed to
  keep doing so in every config (its slowdown factor scales all of its configs).
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
from saturn_airflow.control.drift import job_state
from saturn_airflow.spec.plan import Plan, new_plan_id
from saturn_airflow.spec.profile_table import Config, JobProfile, ProfileTable
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
    a = plan.assignment(job)
    try:
        jp = table.job(job)
    except KeyError:
        return None
    for c in jp.configs:
        if c.parallelism == a.parallelism and c.gpus == a.gpus and c.knobs == a.knobs:
            return c
    return None


def _step_s(c: Config, total: int) -> float:
    """Profiled seconds per step of a config: its `step_s` when the profiler recorded it, else runtime/steps."""
    extra = c.model_extra or {}
    if extra.get("step_s"):
        return float(extra["step_s"])
    return c.runtime_s / max(1, total)


def _startup_s(c: Config) -> float:
    return float((c.model_extra or {}).get("startup_s") or 0.0)


def observe(plan: Plan, table: ProfileTable, records: dict[str, Optional[dict]], steps: dict[str, int],
            rates: Optional[dict[str, float]] = None) -> dict[str, Observed]:
    """The observed state of every job of `plan`. `steps`: job -> total steps (from the workload);
    `rates`: recent rates (steps/s) measured by the drift watch, preferred over the records' averages."""
    rates = rates or {}
    out: dict[str, Observed] = {}
    seen: list[float] = []
    unobserved: list[str] = []
    for a in plan.assignments:
        rec = records.get(a.job) or {}
        state = job_state(plan, a.job, rec)
        total = int(rec.get("total") or steps.get(a.job) or 0)
        step = int(rec.get("step") or 0) if rec else 0
        rate = rates.get(a.job) or rec.get("rate_steps_per_s")
        rate = float(rate) if rate else None
        slowdown = 1.0
        cfg = _config_of(table, plan, a.job)
        own = None
        if rate and cfg is not None and total:
            own = min(max((1.0 / rate) / _step_s(cfg, total), SLOWDOWN_CLAMP[0]), SLOWDOWN_CLAMP[1])
            seen.append(own)
        if own is not None and state in ("running", "pending"):  # pending: preempted earlier, rate known
            slowdown = own
        out[a.job] = Observed(a.job, state, step, total, slowdown, rate if state == "running" else None,
                              (rec.get("node") or a.node) if own is not None else None)
        if state == "pending" and own is None:
            unobserved.append(a.job)
    # The machine as a whole may run slower than profiled (shared cores, thermal limits, noisy
    # neighbours): jobs never observed get the smallest slowdown seen on this plan (never below 1), once
    # at least two jobs were observed, so a single straggler does not inflate everyone's estimate.
    machine = max(1.0, min(seen)) if len(seen) >= 2 else 1.0
    for j in unobserved:
        out[j].slowdown = machine
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
            startup = _startup_s(c) * max(1.0, min(slowdown, machine))
            runtime = startup + (c.runtime_s - _startup_s(c)) * (left / total) * slowdown + overhead
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
    """How much slower than profiled a node runs: the smallest slowdown of the jobs observed there, at
    least 1 (never faster than profiled); 1 when nothing ran there yet."""
    seen = [o.slowdown for o in observed.values() if o.node == node]
    return max(1.0, min(seen)) if seen else 1.0


@dataclasses.dataclass
class ReplanResult:
    plan: Optional[Plan]
    option: str
    options: dict[str, float]  # option -> makespan
    observed: dict[str, Observed]
    message: str


def replan_plan(table: ProfileTable, plan: Plan, records: dict[str, Optional[dict]], steps: dict[str, int], *,
                solver: Optional[str] = None, time_limit: Optional[float] = None,
                restart_overhead_s: Optional[float] = None, min_gain: Optional[float] = None, reason: str = "", rates: Optional[dict[str, float]] = None,
                log: Callable[[str], None] = lambda m: None) -> ReplanResult:
    """Plan the remaining work of `plan` both ways (keep running jobs / preempt them) and take the better."""
    from saturn_airflow.planner import plan_table

    time_limit = settings.time_limit() if time_limit is None else time_limit
    restart_overhead_s = settings.restart_overhead_s() if restart_overhead_s is None else restart_overhead_s
    min_gain = settings.min_preempt_gain() if min_gain is None else min_gain
    observed = observe(plan, table, records, steps, rates)
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
                      steps: dict[str, int], *, owner: str, samples: Optional[dict[str, list]] = None,
                      **kw) -> ReplanResult:
    """Claim, then re-plan `plan_id` from the current progress records; the caller publishes `.plan`."""
    plan = plan_store.get(plan_id)
    if plan_store.superseded_by(plan_id):
        return ReplanResult(None, "none", {}, {}, f"plan {plan_id} is already superseded by {plan_store.superseded_by(plan_id)}")
    if not claim_replan(plan_store, plan_id, owner):
        return ReplanResult(None, "none", {}, {}, f"another re-plan of {plan_id} holds the claim; leaving it to that one")
    records = with_leased_jobs(plan_store.store, plan, progress.all(plan.workload))
    fresh = rates_since(samples or {}, records)
    if fresh:
        kw["rates"] = {**(kw.get("rates") or {}), **fresh}
    return replan_plan(table, plan, records, steps, **kw)


def rates_since(samples: dict[str, list], records: dict[str, Optional[dict]], min_dt: float = 5.0) -> dict[str, float]:
    """Rates between the drift watch's sample (updated_at, step) of each running job and its record now:
    the speed over the last tens of seconds, fresher than the runner's average since start."""
    out: dict[str, float] = {}
    for job, (t_then, step_then) in samples.items():
        rec = records.get(job) or {}
        t_now, step_now = rec.get("updated_at"), rec.get("step")
        if rec.get("state") != "running" or t_now is None or step_now is None:
            continue
        dt, ds = float(t_now) - float(t_then), int(step_now) - int(step_then)
        if dt >= min_dt and ds > 0:
            out[job] = ds / dt
    return out


def with_leased_jobs(store, plan: Plan, records: dict[str, Optional[dict]]) -> dict[str, Optional[dict]]:
    """Count a job as running when a live task holds its job lease but its runner has not reported yet
    (process start-up takes seconds): re-planning must keep or preempt it, not plan it a second time."""
    from saturn_airflow.execution import leases

    out = dict(records)
    for a in plan.assignments:
        rec = out.get(a.job) or {}
        if rec.get("state") in ("running", "done"):
            continue
        holder = leases.holder(store, leases.job_key(plan.workload, a.job))
        if holder and not leases.is_stale(holder) and holder.get("plan_id") == plan.plan_id:
            out[a.job] = {**rec, "state": "running", "plan_id": plan.plan_id, "step": int(rec.get("step") or 0),
                          "rate_steps_per_s": None, "started_at": holder.get("at"), "leased_only": True}
    return out
