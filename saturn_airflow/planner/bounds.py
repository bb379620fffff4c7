"""Lower bounds on the makespan of any valid plan (docs/benchmarks-planner.md).

LB_comb is the tightest cheap bound: a job that must finish by C may have to run in a wider, less
GPU-efficient config, so the smallest C whose forced GPU-seconds fit into G*C bounds every plan.
It dominates both textbook bounds (longest job at its fastest config; total min GPU-seconds / G).
"""

from __future__ import annotations

import math
from typing import Optional

from saturn_airflow.spec.profile_table import ProfileTable
from saturn_airflow.planner.instance import Instance, build_instance


def _job_options(inst: Instance) -> list[list[tuple[float, float]]]:
    """(runtime, gpu-seconds) per option; a pinned job counts as its fixed end (it cannot end earlier)."""
    out = []
    for j in range(len(inst.job_names)):
        f = inst.fixed.get(j)
        if f is not None:
            out.append([(f.end, f.option.gpus * (f.end - f.start))])
        else:
            out.append([(o.runtime, o.gpus * o.runtime) for o in inst.options[j]])
    return out


def lb_length(inst: Instance) -> float:
    return max((min(t for t, _ in opts) for opts in _job_options(inst)), default=0.0)


def lb_area(inst: Instance) -> float:
    return sum(min(a for _, a in opts) for opts in _job_options(inst)) / inst.total_gpus


def lb_comb(inst: Instance) -> float:
    """min { C >= LB_len : sum_j min_{T_jc <= C} g_jc T_jc <= G C }, by one sweep over runtimes."""
    G = inst.total_gpus
    per_job = _job_options(inst)
    events = sorted((t, a, j) for j, opts in enumerate(per_job) for t, a in opts)
    best = [math.inf] * len(per_job)
    missing = len(per_job)
    area = 0.0
    i = 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] <= t:
            _, a, j = events[i]
            if a < best[j]:
                if best[j] == math.inf:
                    missing -= 1
                    area += a
                else:
                    area += a - best[j]
                best[j] = a
            i += 1
        if missing:
            continue
        nxt = events[i][0] if i < len(events) else math.inf
        c = max(t, area / G)
        if c < nxt:
            return c
    return max(lb_length(inst), lb_area(inst))


def lb_wide(inst: Instance) -> float:
    """Jobs too wide to share a node with each other (every option > half the largest node) run at most
    one per node at a time: their summed shortest runtimes over the node count bound the makespan."""
    half = max(inst.node_gpus) / 2
    total = 0.0
    for opts in _job_options_with_gpus(inst):
        if opts and min(g for g, _ in opts) > half:
            total += min(t for _, t in opts)
    return total / len(inst.node_gpus)


def _job_options_with_gpus(inst: Instance) -> list[list[tuple[int, float]]]:
    out = []
    for j in range(len(inst.job_names)):
        f = inst.fixed.get(j)
        out.append([(f.option.gpus, f.end)] if f else [(o.gpus, o.runtime) for o in inst.options[j]])
    return out


def instance_lower_bound(inst: Instance) -> float:
    return max(lb_length(inst), lb_area(inst), lb_comb(inst), lb_wide(inst))


def lower_bound(table: ProfileTable, pinned: Optional[dict] = None) -> float:
    """The best cheap lower bound on any valid plan's makespan, in seconds."""
    return instance_lower_bound(build_instance(table, pinned))
