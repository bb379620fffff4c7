"""Replay a plan the way the Airflow DAG runs it: a job starts once every job in its `after` list has
ended (GPU hand-over edges) and never before its planned start is reachable; runtimes may differ from
the plan (noise or observed runtimes). Shows how a plan degrades when reality drifts from the profile."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from saturn_airflow.spec.plan import Plan


@dataclass
class SimJob:
    job: str
    node: str
    gpu_ids: list[int]
    start_s: float
    end_s: float
    planned_start_s: float
    planned_end_s: float


@dataclass
class SimResult:
    jobs: list[SimJob]
    makespan_s: float
    planned_makespan_s: float
    utilization: float  # busy GPU-seconds / (GPUs used x makespan)


def simulate(plan: Plan, *, noise: float = 0.0, seed: int = 0, runtimes: Optional[dict[str, float]] = None) -> SimResult:
    """Event replay. `runtimes` overrides a job's runtime; else planned runtime x lognormal(0, noise)."""
    rng = random.Random(seed)
    by_name = {a.job: a for a in plan.assignments}
    actual: dict[str, float] = {}
    for a in plan.assignments:
        if runtimes and a.job in runtimes:
            actual[a.job] = float(runtimes[a.job])
        else:
            actual[a.job] = a.runtime_s * (rng.lognormvariate(0.0, noise) if noise > 0 else 1.0)
    end: dict[str, float] = {}
    start: dict[str, float] = {}
    gpu_free: dict[tuple[str, int], float] = {}
    # Plan order respects every `after` edge (a predecessor ends before its successor starts).
    for a in sorted(plan.assignments, key=lambda a: (a.start_s, a.end_s, a.job)):
        ready = max([end[p] for p in a.after if p in end] + [gpu_free.get((a.node, g), 0.0) for g in a.gpu_ids] + [0.0])
        start[a.job] = ready
        end[a.job] = ready + actual[a.job]
        for g in a.gpu_ids:
            gpu_free[(a.node, g)] = end[a.job]
    jobs = [SimJob(n, by_name[n].node, list(by_name[n].gpu_ids), start[n], end[n], by_name[n].start_s, by_name[n].end_s)
            for n in sorted(start, key=lambda n: (start[n], n))]
    span = max(end.values(), default=0.0)
    gpus = {(a.node, g) for a in plan.assignments for g in a.gpu_ids}
    busy = sum(actual[a.job] * a.gpus for a in plan.assignments)
    util = busy / (len(gpus) * span) if span > 0 and gpus else 0.0
    return SimResult(jobs, span, plan.makespan_s, util)


def render_result(res: SimResult) -> str:
    from saturn_airflow.views.gantt import fmt_duration

    lines = [f"{'job':40s} {'planned':>17s} {'simulated':>17s}"]
    for j in res.jobs:
        lines.append(f"{j.job[:40]:40s} {fmt_duration(j.planned_start_s):>8s}-{fmt_duration(j.planned_end_s):<8s} "
                     f"{fmt_duration(j.start_s):>8s}-{fmt_duration(j.end_s):<8s}")
    ratio = res.makespan_s / res.planned_makespan_s if res.planned_makespan_s else 1.0
    lines.append(f"simulated makespan {fmt_duration(res.makespan_s)} vs planned {fmt_duration(res.planned_makespan_s)} "
                 f"({ratio:.3f}x); GPU utilization {res.utilization * 100:.1f}%")
    return "\n".join(lines)
