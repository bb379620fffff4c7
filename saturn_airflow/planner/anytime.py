"""The anytime optimizer: a quick heuristic plan; an exact search on small instances (a proof of
optimality ends planning there); otherwise the annealing, the time-indexed MILP (whole, or per node for
big instances) and a short local-search polish. The best solution seen is kept, so the result is never
worse than the warm start, and every phase stops once the plan is within `tolerance` of the best
lower bound: the time limit is a ceiling, not a target.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from saturn_airflow.planner.exact import solve_exact
from saturn_airflow.planner.heuristics import Solution, heuristic, local_search
from saturn_airflow.planner.instance import Instance
from saturn_airflow.planner.milp import build_time_indexed, extract, slot_count
from saturn_airflow.planner.solvers import solve

DECOMPOSE_JOBS = 100
DECOMPOSE_NODES = 2  # measured: per-node beats one joint model already at 32 jobs on 2 nodes
MIN_SOLVE_S = 1.0
HEURISTIC_SHARE = 0.6  # measured: in 30 s the MILP rarely beats more annealing (docs/benchmarks-planner.md)
SOLVER_SHARE = 0.85
QUICK_S = 0.05  # the first heuristic plan: constructions and a short annealing
# The exact search (docs/benchmarks-planner.md, "Exact search: sizes"): up to EXACT_SMALL_JOBS free jobs it
# usually finishes and may take half the limit, at most EXACT_MAX_S; up to EXACT_MAX_JOBS (grids of
# repeated jobs are cheap to search) it gets a short try that costs the annealing little.
EXACT_SMALL_JOBS = 8
EXACT_MAX_S = 5.0
EXACT_SHARE = 0.5
EXACT_MAX_JOBS = 12
EXACT_TRY_S = 2.0
EXACT_TRY_SHARE = 0.1
EXACT_GOOD_ENOUGH_S = 1.0  # the proof attempt for a plan already within the tolerance


@dataclass
class Outcome:
    solution: Solution
    heuristic_makespan: float
    milp_runs: list[dict] = field(default_factory=list)
    used_milp: bool = False
    bound: float = 0.0  # the best lower bound known on every plan's makespan
    proven: bool = False  # the exact search finished: the solution is optimal
    exact: dict = field(default_factory=dict)  # what the exact search did (nodes, seconds), if it ran


def _log(progress: Optional[Callable[[str], None]], msg: str) -> None:
    if progress:
        progress(msg)


def heuristic_budget(n_jobs: int, time_limit: float) -> float:
    """Annealing is the best value per second on small and mid instances (docs/benchmarks-planner.md)."""
    return HEURISTIC_SHARE * time_limit


def should_decompose(inst: Instance) -> bool:
    return len(inst.free_jobs) >= DECOMPOSE_JOBS or len(inst.node_gpus) >= DECOMPOSE_NODES


def _milp_step(inst: Instance, best: Solution, jobs, nodes, solver: str, budget: float,
               progress, runs: list[dict], tolerance: float = 0.0) -> Solution:
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
    res = solve(ti.model, solver, SOLVER_SHARE * left - 0.5, mip_gap=tolerance)  # solvers overrun their limits a little
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


def within(span: float, bound: float, tolerance: float) -> bool:
    """True when a plan of makespan `span` cannot be beaten by more than `tolerance` (a fraction of it)."""
    return span <= bound * (1 + 1e-9) or (span > 0 and (span - bound) / span <= tolerance)


def optimize(inst: Instance, lower_bound: float, *, solver: str, time_limit: float,
             seed: int = 0, progress=None, tolerance: float = 0.0) -> Outcome:
    t0 = time.monotonic()
    deadline = t0 + time_limit
    jobs = inst.free_jobs
    if not jobs:
        return Outcome(Solution([], {}, (lower_bound, 0.0), "pinned-only"), lower_bound, bound=lower_bound, proven=True)
    target = lower_bound / (1 - tolerance) if tolerance < 1 else float("inf")
    _log(progress, f"heuristic warm start for {len(jobs)} jobs")
    best = heuristic(inst, lower_bound, seed=seed, budget_s=min(QUICK_S, 0.1 * time_limit), target=target)
    out = Outcome(best, best.makespan, bound=lower_bound)
    _log(progress, f"heuristic plan {best.makespan:.0f}s (lower bound {lower_bound:.0f}s)")
    good_enough = within(best.makespan, lower_bound, tolerance)
    if best.makespan <= lower_bound * (1 + 1e-9) or (good_enough and len(jobs) > EXACT_MAX_JOBS):
        return out
    if len(jobs) <= EXACT_MAX_JOBS:
        # small: prove it (a plan already good enough gets a short try only)
        left = deadline - time.monotonic()
        if len(jobs) <= EXACT_SMALL_JOBS:
            budget = min(EXACT_MAX_S, EXACT_SHARE * left)
        else:
            budget = min(EXACT_TRY_S, EXACT_TRY_SHARE * left)
        if good_enough:
            budget = min(budget, EXACT_GOOD_ENOUGH_S)
        ex = solve_exact(inst, best, time_limit=budget, lower_bound=lower_bound)
        out.exact = {"proven": ex.proven, "nodes": ex.nodes, "time_s": round(ex.time_s, 3)}
        if ex.solution is not None and ex.solution.score < best.score:
            best = ex.solution
        _log(progress, f"exact search: {'optimal' if ex.proven else 'cut short'} after {ex.nodes} nodes in "
             f"{ex.time_s:.1f}s, plan {best.makespan:.0f}s")
        if ex.proven:
            out.solution, out.bound, out.proven = best, max(lower_bound, ex.bound), True
            return out
        if within(best.makespan, lower_bound, tolerance):
            out.solution = best
            return out
    if time_limit >= 2 * MIN_SOLVE_S:
        import pyomo.environ  # noqa: F401  (seconds on a first import: pay it before splitting the budget)
    left = deadline - time.monotonic()
    best = heuristic(inst, lower_bound, seed=seed, budget_s=heuristic_budget(len(jobs), left), extra=[best],
                     target=target)
    out.heuristic_makespan = min(out.heuristic_makespan, best.makespan)
    if within(best.makespan, lower_bound, tolerance):
        out.solution = best
        return out
    polish = min(0.05 * time_limit, 0.3 + 0.005 * len(jobs))
    milp_budget = deadline - time.monotonic() - polish
    if milp_budget >= MIN_SOLVE_S:
        if should_decompose(inst):
            best = _per_node(inst, best, solver, milp_budget, progress, out.milp_runs, lower_bound, seed, tolerance)
        else:
            best = _milp_step(inst, best, jobs, None, solver, milp_budget, progress, out.milp_runs, tolerance)
    left = deadline - time.monotonic()
    if left > 0.05 and not within(best.makespan, lower_bound, tolerance):
        best = min(best, local_search(inst, best, random.Random(seed + 1), time.monotonic() + left, target=target),
                   key=lambda s: s.score)
    out.solution = best
    out.used_milp = any("termination" in r for r in out.milp_runs)
    return out


def _node_view(inst: Instance, node: int) -> Instance:
    """The instance with every job's options restricted to one node (jobs there cannot leave it)."""
    return dataclasses.replace(inst, options=[[o for o in opts if o.node == node] for opts in inst.options])


def _per_node(inst: Instance, best: Solution, solver: str, budget: float, progress, runs, lower_bound: float,
              seed: int = 0, tolerance: float = 0.0) -> Solution:
    """Decomposition: the heuristic assigns jobs to nodes; then the node that ends last gets its own
    annealing (32 jobs evaluate ~16x faster than 500) and its own MILP, and so on while time is left."""
    end_at = time.monotonic() + budget
    rng = random.Random(seed + 2)
    done: set[int] = set()
    while True:
        left = end_at - time.monotonic()
        spans = _node_makespans(inst, best)
        todo = [n for n in sorted(spans, key=lambda n: -spans[n]) if n not in done and spans[n] > lower_bound * (1 + 1e-9)]
        if not todo or left < 0.1 or within(best.makespan, lower_bound, tolerance):
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
                              share / 2, progress, runs, tolerance)


def _merge(inst: Instance, best: Solution, node: int, sub: Solution) -> Solution:
    """`best` with the jobs of `node` in `sub`'s order and options (other nodes untouched)."""
    from saturn_airflow.planner.heuristics import scored

    it = iter(sub.order)
    order = [next(it) if best.choice[j].node == node else j for j in best.order]
    choice = {**best.choice, **sub.choice}
    return scored(inst, order, choice, "per-node")
