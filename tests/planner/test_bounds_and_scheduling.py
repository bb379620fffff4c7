"""Lower bounds, the list scheduler, extraction from the MILP, and the instance generators."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from saturn_airflow.planner.bounds import instance_lower_bound, lb_area, lb_comb, lb_length, lb_wide
from saturn_airflow.planner.generate import adaptdl, saturn_runtime, saturn_shaped, synthetic
from saturn_airflow.planner.heuristics import heuristic
from saturn_airflow.planner.instance import build_instance
from saturn_airflow.planner.list_scheduler import list_schedule, makespan
from saturn_airflow.planner.milp import build_time_indexed, extract
from saturn_airflow.spec.profile_table import ProfileTable

ADAPTDL = Path(__file__).resolve().parents[1] / "data" / "adaptdl-osdi21"


def _random_solution(inst, rng):
    order = list(inst.free_jobs)
    rng.shuffle(order)
    return order, {j: rng.choice(inst.options[j]) for j in order}


@pytest.mark.parametrize("seed", range(4))
def test_bounds_below_every_schedule_and_comb_dominates(seed):
    inst = build_instance(synthetic(10, [8, 4][: 1 + seed % 2], seed=seed))
    lb = instance_lower_bound(inst)
    assert lb_comb(inst) >= max(lb_length(inst), lb_area(inst)) - 1e-6
    rng = random.Random(seed)
    for _ in range(50):
        order, choice = _random_solution(inst, rng)
        assert makespan(list_schedule(inst, order, choice)) >= lb - 1e-6


def test_wide_jobs_bound():
    t = ProfileTable.model_validate({"cluster": {"nodes": [{"name": "n", "gpus": 8}]}, "jobs": [
        {"name": f"j{i}", "configs": [{"parallelism": "fsdp", "gpus": 6, "runtime_s": 10.0}]} for i in range(3)]})
    inst = build_instance(t)
    assert lb_wide(inst) == 30.0 and instance_lower_bound(inst) == 30.0


def test_list_schedule_ids_distinct_and_no_overlap():
    inst = build_instance(synthetic(20, [8, 8], seed=3))
    order, choice = _random_solution(inst, random.Random(1))
    pls = list_schedule(inst, order, choice)
    for p in pls:
        assert len(set(p.gpu_ids)) == p.option.gpus == len(p.gpu_ids)
    for a in pls:
        for b in pls:
            if a is not b and a.option.node == b.option.node and set(a.gpu_ids) & set(b.gpu_ids):
                assert a.end <= b.start + 1e-9 or b.end <= a.start + 1e-9


def test_dominated_options_are_pruned():
    t = ProfileTable.model_validate({"cluster": {"nodes": [{"name": "n", "gpus": 8}]}, "jobs": [
        {"name": "a", "configs": [{"parallelism": "fsdp", "gpus": 4, "runtime_s": 10.0},
                                  {"parallelism": "ddp", "gpus": 4, "runtime_s": 12.0},
                                  {"parallelism": "ddp", "gpus": 8, "runtime_s": 11.0},
                                  {"parallelism": "pipeline", "gpus": 2, "runtime_s": 18.0}]}]})
    inst = build_instance(t)
    assert sorted((o.gpus, o.runtime) for o in inst.options[0]) == [(2, 18.0), (4, 10.0)]
    assert len(inst.all_options[0]) == 4


def test_extraction_uses_model_point_and_rejects_fractional():
    inst = build_instance(synthetic(6, 8, seed=2))
    lb = instance_lower_bound(inst)
    warm = heuristic(inst, lb, budget_s=0.2)
    ti = build_time_indexed(inst, warm, inst.free_jobs, slots=40)
    got = extract(inst, ti, warm)  # the warm start itself is loaded as the model's point
    assert got is not None and set(got.choice) == set(warm.choice)
    assert got.makespan <= warm.makespan * 1.05  # slot rounding only reorders near-ties
    var = next(iter(ti.model.S.values()))
    var.value = 0.5
    assert extract(inst, ti, warm) is None


def test_saturn_shaped_curves_cross_as_in_fig_1b():
    for model in ("gpt2-1.5b", "gptj-6b"):
        for batch in (16, 32):
            few, many = (2, 8) if model.startswith("gpt2") else (3, 8)
            assert saturn_runtime(model, batch, "pipeline", few) < saturn_runtime(model, batch, "fsdp", few)
            assert saturn_runtime(model, batch, "fsdp", many) < saturn_runtime(model, batch, "pipeline", many)
            assert saturn_runtime(model, batch, "spilling", 1) is not None
            assert saturn_runtime(model, batch, "spilling", 2) is None
            assert saturn_runtime(model, batch, "ddp", 4) is None  # full replica: OOM
    t = saturn_shaped()
    assert len(t.jobs) == 12 and t.cluster.total_gpus == 8


@pytest.mark.skipif(not ADAPTDL.is_dir(), reason="AdaptDL traces not present")
def test_adaptdl_tables_from_measured_traces():
    t = adaptdl(ADAPTDL, n_jobs=12, nodes=8, seed=0)
    assert len(t.jobs) == 12
    for job in t.jobs:
        assert job.configs and all(c.runtime_s > 0 for c in job.configs)
