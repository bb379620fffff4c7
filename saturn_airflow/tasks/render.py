"""Plan -> task specs for one Airflow DAG per plan version. Pure and fast: no torch, no solving, no Airflow.

The DAG factory (dags/saturn_plans.py) only turns these specs into operators. Rendering is a function
of the immutable plan alone (never of its superseded marker or progress), so a running plan's DAG
never changes shape.
"""

from __future__ import annotations

import dataclasses
import re

from saturn_airflow import settings
from saturn_airflow.spec.plan import Plan

DAG_PREFIX = "saturn_run__"
DRIFT_TASK = "drift_watch"
REPLAN_TASK = "trigger_replan"
RESULT_TASK = "plan_result"  # after every training task: fails the DAG run when a job failed for good
PLANNING_DAG_ID = "saturn_plan"
DEFAULT_POOL = "default_pool"


_STAMP = re.compile(r"-(\d{8}T\d{6})-[0-9a-f]+$")


def newest(plan_ids: list[str], n: int) -> list[str]:
    """The `n` newest plan ids, by the UTC stamp inside the id (new_plan_id), oldest first."""
    def key(pid: str):
        m = _STAMP.search(pid)
        return (m.group(1) if m else "", pid)

    return sorted(plan_ids, key=key)[-n:] if n > 0 else []


def dag_id(plan_id: str) -> str:
    return f"{DAG_PREFIX}{plan_id}"


def plan_id_of(dag_id_: str) -> str:
    return dag_id_[len(DAG_PREFIX):] if dag_id_.startswith(DAG_PREFIX) else dag_id_


def task_id(job: str) -> str:
    """Job names are already valid task ids (letters, digits, '-', '_', '.'); reserved names get a suffix."""
    return f"{job}_job" if job in (DRIFT_TASK, REPLAN_TASK, RESULT_TASK) else job


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    task_id: str
    job: str
    node: str
    pool: str
    pool_slots: int
    queue: str
    priority_weight: int
    upstream: tuple[str, ...]
    gpu_ids: tuple[int, ...]
    kept: bool  # still running under the parent plan: this task only waits for it (no GPU pool slots)


def task_specs(plan: Plan, pool_prefix: str | None = None) -> list[TaskSpec]:
    """One spec per job: pool = its node's pool, pool_slots = its GPUs, queue = its node,
    priority_weight from the schedule order (earliest start first), upstream = the plan's `after`."""
    prefix = settings.pool_prefix() if pool_prefix is None else pool_prefix
    kept = set((plan.model_extra or {}).get("kept") or [])
    order = sorted(plan.assignments, key=lambda a: (a.start_s, a.end_s, a.job))
    n = len(order)
    specs = []
    for rank, a in enumerate(order):
        is_kept = a.job in kept
        specs.append(TaskSpec(
            task_id=task_id(a.job), job=a.job, node=a.node,
            pool=DEFAULT_POOL if is_kept else f"{prefix}{a.node}",
            pool_slots=1 if is_kept else a.gpus,
            queue=a.node, priority_weight=n - rank,
            upstream=tuple(task_id(b) for b in a.after), gpu_ids=tuple(a.gpu_ids), kept=is_kept,
        ))
    return specs


def doc_md(plan: Plan) -> str:
    extra = plan.model_extra or {}
    lines = [f"### saturn plan `{plan.plan_id}`", "",
             f"workload **{plan.workload}**, {len(plan.assignments)} jobs, planned makespan "
             f"{plan.makespan_s:.0f} s (lower bound {plan.lower_bound_s:.0f} s), solver {plan.solver.name} "
             f"({plan.solver.status})."]
    if plan.parent_plan_id:
        lines += ["", f"Re-plan of `{plan.parent_plan_id}`: {extra.get('reason', '')}"]
        if extra.get("kept") or extra.get("preempted"):
            lines += [f"kept running: {extra.get('kept') or '-'}; preempted (resume from checkpoint): {extra.get('preempted') or '-'}"]
    lines += ["", "| job | node | GPUs | parallelism | start s | end s |", "|---|---|---|---|---|---|"]
    for a in sorted(plan.assignments, key=lambda a: a.start_s)[:50]:
        lines.append(f"| {a.job} | {a.node} | {a.gpu_ids} | {a.parallelism} | {a.start_s:.0f} | {a.end_s:.0f} |")
    if len(plan.assignments) > 50:
        lines.append(f"| ... {len(plan.assignments) - 50} more | | | | | |")
    return "\n".join(lines)


def synthetic_plan(n_jobs: int, nodes: list[tuple[str, int]] = (("node0", 8),), workload: str = "synthetic",
                   plan_id: str | None = None, seed: int = 0) -> Plan:
    """A valid plan of `n_jobs` list-scheduled jobs over `nodes` (benchmarks and rendering tests)."""
    import random

    from saturn_airflow.spec.plan import Assignment, SolverInfo, fill_after, new_plan_id, now_iso

    rng = random.Random(seed)
    free = {name: [0.0] * gpus for name, gpus in nodes}
    assignments = []
    for i in range(n_jobs):
        name, gpus = nodes[i % len(nodes)]
        k = rng.choice([g for g in (1, 2, 4, 8) if g <= gpus])
        ids = sorted(range(gpus), key=lambda g: (free[name][g], g))[:k]
        start = max(free[name][g] for g in ids)
        end = start + rng.uniform(60, 600)
        for g in ids:
            free[name][g] = end
        assignments.append(Assignment(job=f"job-{i:04d}", parallelism="ddp", gpus=k, node=name, gpu_ids=sorted(ids),
                                      start_s=start, end_s=end))
    fill_after(assignments)
    return Plan(plan_id=plan_id or new_plan_id(workload), workload=workload, created_at=now_iso(),
                makespan_s=max(a.end_s for a in assignments), lower_bound_s=0.0,
                solver=SolverInfo(name="synthetic", status="heuristic"), assignments=assignments)
