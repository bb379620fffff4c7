"""Terminal Gantt and the plan replay."""

from __future__ import annotations

from saturn_airflow.views.gantt import render
from saturn_airflow.planner import plan_table
from saturn_airflow.planner.generate import synthetic
from saturn_airflow.planner.simulate import simulate


def test_gantt_rows_per_gpu_and_legend():
    t = synthetic(6, [4, 2], seed=1)
    plan = plan_table(t, baseline="max-heuristic")
    text = render(plan, width=40, node_gpus={n.name: n.gpus for n in t.cluster.nodes})
    assert text.count("gpu") >= 6
    for a in plan.assignments:
        assert a.job in text
    assert "lower bound" in text


def test_simulate_exact_replays_plan_and_noise_changes_it():
    plan = plan_table(synthetic(8, 8, seed=2), time_limit=1.0)
    exact = simulate(plan)
    assert abs(exact.makespan_s - plan.makespan_s) < 1e-6
    for j in exact.jobs:
        assert j.start_s <= j.planned_start_s + 1e-6
    noisy = simulate(plan, noise=0.3, seed=1)
    assert noisy.makespan_s != exact.makespan_s
    slow = simulate(plan, runtimes={a.job: a.runtime_s * 2 for a in plan.assignments})
    assert slow.makespan_s >= plan.makespan_s * 2 - 1e-6
