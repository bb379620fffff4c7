"""The anytime optimizer: heuristic warm start, then the time-indexed MILP (whole, or per node for big
instances), then a short local-search polish; the best solution seen is kept, so the result is never
worse than the warm start.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from saturn_airflow.planner.heuristics import Solution, heuristic, local_search
from saturn_airflow.planner.instance import Instance
from saturn_airflow.planner.milp import build_time_indexed, extract, slot_count
from saturn_airflow.planner.solvers import solve

DECOMPOSE_JOBS = 100
DECOMPOSE_NODES = 2  # measured: per-node beats one joint model already at 32 jobs on 2 nodes
MIN_SOLVE_S = 1.0
HEURISTIC_SHARE = 0.6  # measured: in 30 s the MILP rarely beats more annealing (docs/benchmarks-planner.md)
SOLVER_SHARE = 0.85


@dataclass
class Outcome:
    solution: Solution
    heuristic_makespan: float
    milp_runs: list[dict] = field(default_factory=list)
    used_milp: bool = False


def _log(progress: Optional[Callable[[str], None]], msg: str) -> None:
    if progress:
        progress(msg)


def heuristic_budget(n_jobs: int, time_limit: float) -> float:
    """Annealing is the best value per second on small and mid instances (docs/benchmarks-planner.md)."""
    return HEURISTIC_SHARE * time_limit


def should_decompose(inst: Instance) -> bool:
    return len(inst.free_jobs) >= DECOMPOSE_JOBS or len(inst.node_gpus) >= DECOMPOSE_NODES


def _milp_step(inst: Instance, best: Solution, jobs, nodes, solver: str, budget: float,
               progress, runs: list[dict]) -> Solution:
    """One model over `jobs` on `nodes`, warm-started from `best`; returns the better of the two."""
    slots = slot_count(inst, jobs, nodes, budget)
    if not slots:
        runs.append({"jobs": len(jobs), "skipped": "time limit too short for a useful model"})
        return best
    t0 = time.monotonic()
    ti = build_time_indexed(inst, best, jobs, nodes, slots=slots)
    build_s = time.monotonic() - t0
    left = budget - build_s
    run = {"jobs": len(jobs), "nodes": None if nodes is None else sorted(nodes), "slots": ti.horizon,
           "binaries": len(ti.model.X), "build_s": round(build_s, 3)}
    if left < MIN_SOLVE_S:
        run["skipped"] = "no time left after building the model"
        runs.append(run)
        return best
    res = solve(ti.model, solver, SOLVER_SHARE * left - 0.5)  # solvers overrun their limits a little
    run.update(termination=res.termination, solve_s=round(res.time_s, 3), has_solution=res.has_solution)
    cand = extract(inst, ti, best) if res.has_solution else None
    run["makespan_s"] = None if cand is None else cand.makespan
    runs.append(run)
    _log(progress, f"{solver}: {res.termination} in {res.time_s:.1f}s"
         + (f", plan {cand.makespan:.0f}s" if cand else ", no usable solution"))
    return cand if cand is not None and cand.score < best.score else best


def _node_makespans(inst: Instance, sol: Solution) -> dict[int, float]:
    from saturn_airflow.planner.list_scheduler import list_schedule

    out = {n: 0.0 for n in range(len(inst.node_gpus))}
    for p in list_schedule(inst, sol.order, sol.choice):
        out[p.option.node] = max(out[p.option.node], p.end)
    return out


def optimize(inst: Instance, lower_bound: float, *, solver: str, time_limit: float,
             seed: int = 0, progress=None) -> Outcome:
    t0 = time.monotonic()
    deadline = t0 + time_limit
    jobs = inst.free_jobs
    if not jobs:
        return Outcome(Solution([], {}, (lower_bound, 0.0), "pinned-only"), lower_bound)
    if time_limit >= 2 * MIN_SOLVE_S:
        import pyomo.environ  # noqa: F401  (seconds on a first import: pay it before splitting the budget)
    _log(progress, f"heuristic warm start for {len(jobs)} jobs")
    best = heuristic(inst, lower_bound, seed=seed, budget_s=heuristic_budget(len(jobs), deadline - time.monotonic()))
    out = Outcome(best, best.makespan)
    _log(progress, f"heuristic plan {best.makespan:.0f}s (lower bound {lower_bound:.0f}s)")
    if best.makespan <= lower_bound * (1 + 1e-9):
        return out
    polish = min(0.05 * time_limit, 0.3 + 0.005 * len(jobs))
    milp_budget = deadline - time.monotonic() - polish
    if milp_budget >= MIN_SOLVE_S:
        if should_decompose(inst):
            best = _per_node(inst, best, solver, milp_budget, progress, out.milp_runs, lower_bound, seed)
        else:
            best = _milp_step(inst, best, jobs, None, solver, milp_budget, progress, out.milp_runs)
    left = deadline - time.monotonic()
    if left > 0.05 and best.makespan > lower_bound * (1 + 1e-9):
        best = min(best, local_search(inst, best, random.Random(seed + 1), time.monotonic() + left), key=lambda s: s.score)
    out.solution = best
    out.used_milp = any("termination" in r for r in out.milp_runs)
    return out


def _node_view(inst: Instance, node: int) -> Instance:
    """The instance with every job's options restricted to one node (jobs there cannot leave it)."""
    return dataclasses.replace(inst, options=[[o for o in opts if o.node == node] for opts in inst.options])


def _per_node(inst: Instance, best: Solution, solver: str, budget: float, progress, runs, lower_bound: float,
              seed: int = 0) -> Solution:
    """Decomposition: the heuristic assigns jobs to nodes; then the node that ends last gets its own
    annealing (32 jobs evaluate ~16x faster than 500) and its own MILP, and so on while time is left."""
    end_at = time.monotonic() + budget
    rng = random.Random(seed + 2)
    done: set[int] = set()
    while True:
        left = end_at - time.monotonic()
        spans = _node_makespans(inst, best)
        todo = [n for n in sorted(spans, key=lambda n: -spans[n]) if n not in done and spans[n] > lower_bound * (1 + 1e-9)]
        if not todo or left < 0.1:
            return best
        n = todo[0]
        done.add(n)
        jobs = [j for j in best.order if best.choice[j].node == n]
        if not jobs:
            continue
        share = left if len(todo) == 1 else max(0.2, left / min(len(todo), 4))
        _log(progress, f"node {inst.node_names[n]}: {len(jobs)} jobs, ends at {spans[n]:.0f}s; improving for {share:.1f}s")
        view = _node_view(inst, n)
        sub = Solution(jobs, {j: best.choice[j] for j in jobs}, (spans[n], 0.0))
        sub = local_search(view, sub, rng, time.monotonic() + share / 2)
        merged = _merge(inst, best, n, sub)
        if merged.score < best.score:
            best = merged
        if share / 2 >= MIN_SOLVE_S:
            best = _milp_step(inst, best, [j for j in best.order if best.choice[j].node == n], {n}, solver,
                              share / 2, progress, runs)


def _merge(inst: Instance, best: Solution, node: int, sub: Solution) -> Solution:
    """`best` with the jobs of `node` in `sub`'s order and options (other nodes untouched)."""
    from saturn_airflow.planner.heuristics import scored

    it = iter(sub.order)
    order = [next(it) if best.choice[j].node == node else j for j in best.order]
    choice = {**best.choice, **sub.choice}
    return scored(inst, order, choice, "per-node")
