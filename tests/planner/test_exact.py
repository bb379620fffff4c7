"""The exact search: on seeded random one-node tables whose optimum this test proves by itself (brute force
over every start order and option, with a cumulative-capacity scheduler that may backfill, a different
method from the planner's), plan_table's plan is that optimum, says "optimal" and reports gap 0; pinned
jobs (re-plans) too; a search cut short proves nothing; the tolerance ends planning early."""

from __future__ import annotations

import itertools
import random

import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.planner import PinnedJob, plan_table
from saturn_airflow.planner.bounds import instance_lower_bound
from saturn_airflow.planner.exact import solve_exact
from saturn_airflow.planner.generate import synthetic
from saturn_airflow.planner.heuristics import constructions
from saturn_airflow.planner.instance import build_instance
from saturn_airflow.spec.plan import check_plan
from saturn_airflow.spec.profile_table import ProfileTable


def random_table(seed: int) -> ProfileTable:
    """4-6 jobs on one node of 2-8 GPUs, 1-3 configs each (integer-ish runtimes, so ties happen), at most
    ~60k (order, option) combinations for the brute force."""
    rng = random.Random(seed)
    gpus = rng.choice([2, 3, 4, 6, 8])
    while True:
        n = rng.randint(4, 6)
        jobs = []
        for j in range(n):
            t1 = rng.randint(10, 120)
            counts = sorted(rng.sample(range(1, gpus + 1), rng.randint(1, min(3, gpus))))
            configs = [{"parallelism": "ddp", "gpus": g, "runtime_s": float(round(t1 / g ** rng.uniform(0.5, 1.0)))}
                       for g in counts]
            jobs.append({"name": f"j{j}", "configs": configs})
        combos = 1
        for i in range(1, n + 1):
            combos *= i
        for job in jobs:
            combos *= len(job["configs"])
        if combos <= 60_000:
            break
    return ProfileTable.model_validate({"cluster": {"nodes": [{"name": "n0", "gpus": gpus}]}, "jobs": jobs})


def _earliest(profile: list[tuple[float, float, int]], cap: int, g: int, d: float) -> float:
    """Earliest t >= 0 with g GPUs free throughout [t, t + d), given busy intervals (start, end, gpus)."""
    for t in sorted({0.0} | {e for _, e, _ in profile}):
        points = {t} | {s for s, _, _ in profile if t < s < t + d}
        if all(sum(k for s, e, k in profile if s <= p < e) + g <= cap for p in points):
            return t
    raise AssertionError("unreachable: after every interval ends all GPUs are free")


def brute_force(t: ProfileTable, pinned_busy: list[tuple[float, float, int]] = ()) -> float:
    """The optimal makespan: every order x every config, each job at its earliest feasible start
    (serial schedule generation with backfilling; its best over all orders is optimal)."""
    cap = t.cluster.nodes[0].gpus
    jobs = [j for j in t.jobs if j.name not in {n for n, *_ in pinned_busy}]
    busy0 = [(s, e, k) for _, s, e, k in pinned_busy]
    best = max((e for _, e, _ in busy0), default=0.0)
    best_all = float("inf")
    for order in itertools.permutations(range(len(jobs))):
        for cfgs in itertools.product(*(jobs[i].configs for i in order)):
            profile = list(busy0)
            span = best
            for c in cfgs:
                s = _earliest(profile, cap, c.gpus, c.runtime_s)
                profile.append((s, s + c.runtime_s, c.gpus))
                span = max(span, s + c.runtime_s)
                if span >= best_all:
                    break
            best_all = min(best_all, span)
    return best_all


@pytest.mark.parametrize("seed", range(8))
def test_small_random_tables_are_solved_to_proven_optimality(seed):
    t = random_table(seed)
    opt = brute_force(t)
    plan = plan_table(t, time_limit=30.0)
    check_plan(plan, t)
    assert plan.makespan_s == pytest.approx(opt, rel=1e-9)
    assert plan.solver.status == "optimal"
    assert plan.solver.gap == 0.0
    assert plan.lower_bound_s == pytest.approx(plan.makespan_s, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_replans_with_pinned_jobs_are_optimal_too(seed):
    """A re-plan: one job keeps running on its GPUs (its table config is its remaining time)."""
    t = random_table(100 + seed)
    run = t.jobs[0]
    keep = min(run.configs, key=lambda c: c.gpus)
    data = t.model_dump(mode="json")
    data["jobs"][0]["configs"] = [c for c in data["jobs"][0]["configs"] if c["gpus"] == keep.gpus][:1]
    t = ProfileTable.model_validate(data)
    pinned = {run.name: PinnedJob(node="n0", gpu_ids=list(range(keep.gpus)))}
    opt = brute_force(t, [(run.name, 0.0, keep.runtime_s, keep.gpus)])
    plan = plan_table(t, time_limit=30.0, pinned=pinned)
    check_plan(plan, t)
    a = plan.assignment(run.name)
    assert (a.gpu_ids, a.start_s) == (list(range(keep.gpus)), 0.0)
    assert plan.makespan_s == pytest.approx(opt, rel=1e-9)
    assert plan.solver.status == "optimal" and plan.solver.gap == 0.0


def test_a_search_cut_short_proves_nothing():
    inst = build_instance(synthetic(9, 8, seed=0))
    lb = instance_lower_bound(inst)
    start = min(constructions(inst, lb, float("inf")), key=lambda s: s.score)
    res = solve_exact(inst, start, node_budget=500, lower_bound=lb)
    assert not res.proven and res.bound == lb
    assert res.solution is None or res.solution.makespan < start.makespan


def test_tolerance_ends_planning_at_a_good_enough_plan():
    t = synthetic(40, [8, 8], seed=3)
    plan = plan_table(t, time_limit=60.0, tolerance=0.5)
    check_plan(plan, t)
    assert plan.solver.gap <= 0.5 and plan.solver.tolerance == 0.5
    assert plan.solver.milp_runs == []  # nothing left to gain: the solver never started
    with pytest.raises(SaturnInputError, match="gap tolerance"):
        plan_table(t, tolerance=1.5)
