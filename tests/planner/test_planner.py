"""plan_table: every plan valid (all baselines, both solvers, multi-node, heterogeneous, pinned), never worse
than its warm start, bounded below by the lower bound, optimal on instances small enough to brute-force."""

from __future__ import annotations

import itertools

import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.plan import check_plan
from saturn_airflow.planner import BASELINES, PinnedJob, lower_bound, plan_table
from saturn_airflow.planner.generate import saturn_shaped, synthetic
from saturn_airflow.planner.instance import build_instance
from saturn_airflow.planner.list_scheduler import evaluate
from saturn_airflow.spec.profile_table import ProfileTable

TL = 1.0


def table(jobs, nodes=({"name": "n0", "gpus": 4},)):
    return ProfileTable.model_validate({"cluster": {"nodes": list(nodes)}, "jobs": jobs})


def cfg(par, g, t, **extra):
    return {"parallelism": par, "gpus": g, "runtime_s": t, **extra}


INSTANCES = {
    "syn8": lambda: synthetic(8, 8, seed=1),
    "two-nodes": lambda: synthetic(10, [8, 4], seed=2),
    "hetero": lambda: synthetic(9, [4, 4], seed=3, gpu_types=["a100", "v100"]),
    "saturn": saturn_shaped,
}


@pytest.mark.parametrize("name", sorted(INSTANCES))
@pytest.mark.parametrize("baseline", BASELINES)
def test_every_baseline_plan_is_valid(name, baseline):
    t = INSTANCES[name]()
    plan = plan_table(t, baseline=baseline, seed=4)
    check_plan(plan, t)
    assert plan.solver.name == baseline and plan.makespan_s >= plan.lower_bound_s - 1e-6


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_optimized_plan_valid_and_beats_baselines(name):
    t = INSTANCES[name]()
    plan = plan_table(t, time_limit=TL)
    check_plan(plan, t)
    assert plan.lower_bound_s <= plan.makespan_s + 1e-6
    assert plan.makespan_s <= plan.solver.heuristic_makespan_s + 1e-6
    for b in ("current-practice", "max-heuristic", "min-heuristic", "optimus-greedy"):
        assert plan.makespan_s <= plan_table(t, baseline=b).makespan_s * 1.0001, b


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_milp_runs_and_never_worsens_warm_start(solver):
    t = synthetic(6, 8, seed=5)
    plan = plan_table(t, solver=solver, time_limit=4.0)
    check_plan(plan, t)
    assert plan.solver.name == solver
    assert plan.makespan_s <= plan.solver.heuristic_makespan_s + 1e-6
    runs = plan.solver.milp_runs
    if plan.solver.status != "optimal":  # reaching the bound first skips the MILP
        assert runs and (runs[0].get("has_solution") is not None or runs[0].get("skipped"))


def _brute_force(t: ProfileTable) -> float:
    """Best list schedule over every order and every option choice (the planner's own search space)."""
    inst = build_instance(t)
    jobs = inst.free_jobs
    best = float("inf")
    for order in itertools.permutations(jobs):
        for opts in itertools.product(*(inst.options[j] for j in jobs)):
            best = min(best, evaluate(inst, order, dict(zip(jobs, opts)))[0])
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_instances_reach_brute_force_optimum(seed):
    """The annealing, run for a fixed number of moves (not wall time: deterministic on a busy machine),
    reaches the best list schedule; the lower bound is below it; plan_table's plan is valid."""
    import random
    import time

    from saturn_airflow.planner.bounds import instance_lower_bound
    from saturn_airflow.planner.heuristics import constructions, local_search

    t = synthetic(4, 4, seed=seed, counts=(1, 2, 4))
    opt = _brute_force(t)
    inst = build_instance(t)
    lb = instance_lower_bound(inst)
    start = min(constructions(inst, lb, time.monotonic() + 60), key=lambda s: s.score)
    best = local_search(inst, start, random.Random(seed), time.monotonic() + 600, max_moves=20_000)
    assert lb <= opt + 1e-6
    assert best.makespan <= opt * (1 + 1e-9)
    check_plan(plan_table(t, time_limit=TL), t)


def test_pinned_jobs_keep_node_ids_and_start():
    t = table([
        {"name": "running", "configs": [cfg("fsdp", 2, 50.0)]},
        {"name": "a", "configs": [cfg("fsdp", 2, 100.0), cfg("fsdp", 4, 60.0)]},
        {"name": "b", "configs": [cfg("ddp", 1, 80.0), cfg("ddp", 4, 25.0)]},
    ])
    pinned = {"running": PinnedJob(node="n0", gpu_ids=[1, 3])}
    for plan in (plan_table(t, time_limit=3.0, pinned=pinned), plan_table(t, baseline="current-practice", pinned=pinned)):
        check_plan(plan, t)
        r = plan.assignment("running")
        assert (r.node, r.gpu_ids, r.start_s, r.end_s) == ("n0", [1, 3], 0.0, 50.0)
    assert lower_bound(t, pinned) >= 50.0


def test_bad_pins_and_arguments_are_input_errors():
    t = table([{"name": "a", "configs": [cfg("fsdp", 2, 10.0)]}])
    with pytest.raises(SaturnInputError, match="not in the profile table"):
        plan_table(t, pinned={"zz": PinnedJob("n0", [0, 1])})
    with pytest.raises(SaturnInputError, match="no config with 3 GPUs"):
        plan_table(t, pinned={"a": PinnedJob("n0", [0, 1, 2])})
    with pytest.raises(SaturnInputError, match="unknown node"):
        plan_table(t, pinned={"a": PinnedJob("n9", [0, 1])})
    with pytest.raises(SaturnInputError, match="unknown solver"):
        plan_table(t, solver="gurobi")
    with pytest.raises(SaturnInputError, match="unknown baseline"):
        plan_table(t, baseline="oracle")
    with pytest.raises(SaturnInputError, match="time limit"):
        plan_table(t, time_limit=0)


def test_configs_fitting_no_node_are_ignored_and_types_respected():
    t = table([
        {"name": "a", "configs": [cfg("fsdp", 16, 1.0), cfg("fsdp", 2, 10.0, gpu_type="v100"), cfg("ddp", 1, 30.0)]},
    ], nodes=({"name": "n0", "gpus": 4, "gpu_type": "a100"}, {"name": "n1", "gpus": 2, "gpu_type": "v100"}))
    plan = plan_table(t, time_limit=TL)
    check_plan(plan, t)
    a = plan.assignment("a")
    assert (a.node, a.gpus) == ("n1", 2)


def test_plan_metadata():
    t = synthetic(5, 8, seed=9)
    plan = plan_table(t, time_limit=TL, workload="wl", parent_plan_id="wl-parent")
    assert plan.workload == "wl" and plan.parent_plan_id == "wl-parent" and plan.plan_id.startswith("wl-")
    assert plan.solver.status in ("optimal", "feasible", "heuristic")
    assert 0.0 <= plan.solver.gap < 1.0


def test_progress_callback_is_called():
    seen = []
    plan_table(synthetic(5, 8, seed=2), time_limit=TL, progress=seen.append)
    assert seen and all(isinstance(s, str) for s in seen)


def test_decomposed_instance_is_valid_and_respects_pins():
    t = synthetic(100, [8] * 8, seed=7)
    first = t.jobs[0]
    cfg0 = first.configs[0]
    pinned = {first.name: PinnedJob(node="node3", gpu_ids=list(range(cfg0.gpus)))}
    plan = plan_table(t, time_limit=4.0, pinned=pinned)
    check_plan(plan, t)
    a = plan.assignment(first.name)
    assert (a.node, a.gpu_ids, a.start_s) == ("node3", list(range(cfg0.gpus)), 0.0)
