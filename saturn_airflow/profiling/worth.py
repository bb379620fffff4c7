"""Which trials could still change the plan: the guided profiler's stopping rule.

Assume no superlinear speedup: a job's best device time per step (devices x seconds per step, its
fastest config on that count) does not fall as the device count grows, as long as memory is not what
limits it. So once every config of a job on m devices is measured (or pruned) and none of them ran
out of memory or fell back to a memory-saving knob (then more devices may be much faster: spilling on
one GPU against FSDP on eight), no config on n > m devices can step faster than m/n of the best one
there (MARGIN below leaves room for a little superlinear speedup), and each larger count gets that
optimistic runtime, with the measured config's start-up, checkpoint and teardown costs. A count with
no such basis below it cannot be bounded and is measured. Plan
with those stand-ins: the optimistic plan's lower bound L bounds every plan the full profile could
give. If the best plan from measured configs alone is within the tolerance of L, or its gain over L
is less than the trials would cost, no trial is worth its time and profiling stops. Otherwise the
trials worth running are the unmeasured counts the optimistic plan uses.

The planner is asked here because only the plan says what a trial is worth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from saturn_airflow.spec.profile_table import Config, JobProfile, ProfileTable

MARGIN = 0.05  # optimistic step time = 95% of perfect scaling: room for a little superlinear speedup
PLAN_S = 5.0  # seconds each of the two plans may take (small sweeps are solved exactly in far less)
BOUND = "bound:"  # parallelism prefix of an optimistic stand-in config


@dataclass
class Verdict:
    worth: list[tuple[str, int]]  # (speed group, device count) pairs to measure next
    measured_makespan_s: float
    bound_s: float  # no plan from any profile can beat this
    reason: str
    plans: dict = field(default_factory=dict)


def optimistic_runtime(best: Config, m: int, n: int, steps: int, predict: Callable[[dict, int], float]) -> float:
    """Whole-job seconds on n devices if the best measured config on m devices scaled perfectly (less MARGIN)."""
    x = best.model_extra or {}
    step = (x.get("step_s") or 0.0) * m / n * (1 - MARGIN)
    return predict({"step_s": step, **{k: x.get(k) or 0.0 for k in ("startup_s", "save_s", "teardown_s")}}, steps)


def decide(measured: ProfileTable, open_counts: dict[str, list[int]], resolved: dict[str, set[int]],
           steps: dict[str, int], group_of: dict[str, str], predict: Callable[[dict, int], float], *,
           tolerance: float, trial_cost_s: Callable[[str, int], float], solver: str = "highs") -> Verdict:
    """`open_counts[job]`: device counts with configs not measured yet; `resolved[job]`: counts whose every
    config is measured or pruned, none limited by memory (the bound's basis). `trial_cost_s(group, n)`
    estimates what measuring the open configs of (group, n) costs in sweep wall time."""
    from saturn_airflow.planner import plan_table

    jobs = []
    unbounded: set[tuple[str, int]] = set()
    for jp in measured.jobs:
        best_at: dict[int, Config] = {}
        for c in jp.configs:
            step = (c.model_extra or {}).get("step_s")
            if step and c.gpus in resolved.get(jp.name, set()):
                if c.gpus not in best_at or step < best_at[c.gpus].model_extra["step_s"]:
                    best_at[c.gpus] = c
        extra = []
        for n in open_counts.get(jp.name, []):
            below = [c for m, c in best_at.items() if m < n]
            if not below:
                unbounded.add((group_of[jp.name], n))
                continue
            basis = max(below, key=lambda c: c.model_extra["step_s"] * c.gpus)  # the tightest: least efficient best
            extra.append(Config(parallelism=f"{BOUND}{n}", gpus=n, gpu_type=basis.gpu_type,
                                runtime_s=optimistic_runtime(basis, basis.gpus, n, steps[jp.name], predict)))
        jobs.append(JobProfile(name=jp.name, configs=list(jp.configs) + extra))
    if unbounded:
        return Verdict(sorted(unbounded), float("nan"), float("nan"),
                       "no fully measured, memory-unconstrained count below these to bound them")
    optimistic = ProfileTable(cluster=measured.cluster, jobs=jobs)
    p_meas = plan_table(measured, solver=solver, time_limit=PLAN_S, tolerance=0.0)
    p_opt = plan_table(optimistic, solver=solver, time_limit=PLAN_S, tolerance=0.0)
    bound = min(p_opt.lower_bound_s, p_meas.makespan_s)
    span = p_meas.makespan_s
    plans = {"measured_s": span, "optimistic_s": p_opt.makespan_s, "optimistic_status": p_opt.solver.status,
             "measured_status": p_meas.solver.status}
    gain = span - bound
    if gain <= tolerance * span + 1e-9:
        return Verdict([], span, bound, f"no trial can shorten the plan by more than {100 * gain / span:.1f}%", plans)
    used = sorted({(group_of[a.job], a.gpus) for a in p_opt.assignments if a.parallelism.startswith(BOUND)})
    if not used:
        return Verdict([], span, bound, "the optimistic plan uses measured configs only", plans)
    cost = sum(trial_cost_s(g, n) for g, n in used)
    if gain <= cost:
        return Verdict([], span, bound, f"the trials would cost {cost:.0f}s, more than the {gain:.0f}s they could save",
                       plans)
    return Verdict(used, span, bound, f"up to {gain:.0f}s to gain for about {cost:.0f}s of trials", plans)


__all__ = ["decide", "Verdict", "optimistic_runtime", "MARGIN"]
