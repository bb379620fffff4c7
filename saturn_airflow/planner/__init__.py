"""The planner: profile table -> valid, near-optimal Plan (docs/INTERFACES.md).

`plan_table` runs a baseline or the optimizer (heuristic + Pyomo MILP on HiGHS or CBC), turns the
result into the plan IR with concrete GPU ids and `after` edges, and checks it before returning.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from saturn_airflow import settings
from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.plan import Assignment, Plan, SolverInfo, check_plan, fill_after, new_plan_id, now_iso
from saturn_airflow.spec.profile_table import ProfileTable
from saturn_airflow.planner.baselines import BASELINES, run_baseline
from saturn_airflow.planner.bounds import instance_lower_bound, lower_bound
from saturn_airflow.planner.instance import Instance, PinnedJob, build_instance
from saturn_airflow.planner.list_scheduler import Placement, list_schedule
from saturn_airflow.planner.anytime import optimize
from saturn_airflow.planner.solvers import SOLVERS


__all__ = ["plan_table", "PinnedJob", "lower_bound", "BASELINES", "SOLVERS"]


def _assignments(inst: Instance, placements: list[Placement]) -> list[Assignment]:
    out = []
    for p in sorted(placements, key=lambda p: (p.start, inst.job_names[p.job])):
        cfg = inst.table.jobs[p.job].configs[p.option.config]
        out.append(Assignment(
            job=inst.job_names[p.job], parallelism=cfg.parallelism, knobs=dict(cfg.knobs), gpus=cfg.gpus,
            node=inst.node_names[p.option.node], gpu_ids=list(p.gpu_ids), start_s=float(p.start),
            end_s=float(p.start) + float(cfg.runtime_s),
        ))
    fill_after(out)
    return out


def _validate_args(solver: str, time_limit: float, baseline: Optional[str], tolerance: float) -> None:
    if solver not in SOLVERS:
        raise SaturnInputError(f"unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
    if not (isinstance(time_limit, (int, float)) and time_limit > 0 and time_limit < float("inf")):
        raise SaturnInputError(f"time limit must be a positive number of seconds, got {time_limit!r}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise SaturnInputError(f"gap tolerance must be a fraction in [0, 1), got {tolerance!r}")
    if baseline is not None and baseline not in BASELINES:
        raise SaturnInputError(f"unknown baseline {baseline!r} (known: {', '.join(BASELINES)})")


def plan_table(table: ProfileTable, *, solver: Optional[str] = None, time_limit: Optional[float] = None,
               baseline: Optional[str] = None, workload: str = "workload", parent_plan_id: Optional[str] = None,
               pinned: Optional[dict[str, PinnedJob]] = None, seed: int = 0,
               progress: Optional[Callable[[str], None]] = None, tolerance: Optional[float] = None) -> Plan:
    """A valid plan for `table`: the named baseline, or the optimizer's best within `time_limit` seconds
    (defaults: the `solver` and `time_limit` settings).

    The optimizer returns as soon as its plan is proven optimal, or within `tolerance` (a fraction;
    default the `gap_tolerance` setting) of the lower bound; `time_limit` is only a ceiling."""
    solver = settings.solver() if solver is None else solver
    time_limit = settings.time_limit() if time_limit is None else time_limit
    tolerance = settings.gap_tolerance() if tolerance is None else tolerance
    _validate_args(solver, time_limit, baseline, tolerance)
    t0 = time.monotonic()
    inst = build_instance(table, pinned)
    lb = instance_lower_bound(inst)
    extra: dict = {}
    proven = False
    if baseline is not None:
        placements = run_baseline(baseline, inst, seed)
        info = {"name": baseline, "status": "heuristic"}
    else:
        outcome = optimize(inst, lb, solver=solver, time_limit=time_limit, seed=seed, progress=progress,
                           tolerance=tolerance)
        sol = outcome.solution
        placements = list_schedule(inst, sol.order, sol.choice)
        info = {"name": solver, "status": "feasible" if outcome.used_milp else "heuristic"}
        extra = {"heuristic_makespan_s": outcome.heuristic_makespan, "milp_runs": outcome.milp_runs,
                 "source": sol.source, "tolerance": tolerance}
        if outcome.exact:
            extra["exact"] = outcome.exact
        lb = max(lb, outcome.bound)
        proven = outcome.proven
    assignments = _assignments(inst, placements)
    span = max((a.end_s for a in assignments), default=0.0)
    lb = min(lb, span) if proven else lb  # a proof makes the plan's own makespan the bound
    gap = 0.0 if span <= 0 else max(0.0, (span - lb) / span)
    if baseline is None and (proven or gap <= 1e-6):
        info["status"] = "optimal"
    plan = Plan(
        plan_id=new_plan_id(workload), workload=workload, parent_plan_id=parent_plan_id, created_at=now_iso(),
        makespan_s=span, lower_bound_s=lb,
        solver=SolverInfo(**info, time_s=round(time.monotonic() - t0, 3), gap=round(gap, 6), **extra),
        assignments=assignments,
    )
    return check_plan(plan, table)
