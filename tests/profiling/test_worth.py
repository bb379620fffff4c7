"""The guided profiler's rule (no torch): a larger device count is measured only when the plan with it at
perfect scaling could beat the measured plan by more than the tolerance and more than the trials cost."""

from __future__ import annotations

import pytest

from saturn_airflow.profiling.profiler import predict_runtime
from saturn_airflow.profiling.worth import MARGIN, decide, optimistic_runtime
from saturn_airflow.spec.profile_table import Config, ProfileTable


def measured(runtimes: dict[str, float], devices: int = 2) -> ProfileTable:
    """One node; every job measured on 1 device only (step 1 s, 5 s start-up, no checkpoints)."""
    jobs = [{"name": j, "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": t, "step_s": 1.0,
                                     "startup_s": 5.0, "save_s": 0.0, "teardown_s": 0.0}]} for j, t in runtimes.items()]
    return ProfileTable.model_validate({"cluster": {"nodes": [{"name": "n0", "gpus": devices}]}, "jobs": jobs})


def predict(r, steps):
    return predict_runtime(r, steps, ckpt_every_s=0)


def _decide(runtimes, cost=10.0, tolerance=0.01, devices=2):
    steps = {j: int(t - 5) for j, t in runtimes.items()}
    return decide(measured(runtimes, devices), {j: [2] for j in runtimes}, {j: {1} for j in runtimes}, steps,
                  {j: f"g-{j}" for j in runtimes}, predict, tolerance=tolerance, trial_cost_s=lambda g, n: cost)


def test_optimistic_runtime_is_perfect_scaling_less_the_margin():
    best = Config(parallelism="single", gpus=1, runtime_s=105.0, step_s=1.0, startup_s=5.0, save_s=0.0, teardown_s=0.0)
    assert optimistic_runtime(best, 1, 4, 100, predict) == pytest.approx(5.0 + 100 * 0.25 * (1 - MARGIN))


def test_balanced_one_device_plan_needs_no_larger_trial():
    v = _decide({"a": 105.0, "b": 105.0})
    assert v.worth == [] and "no trial can shorten" in v.reason
    assert v.bound_s <= v.measured_makespan_s


def test_an_idle_device_makes_the_larger_count_worth_measuring():
    v = _decide({"a": 1005.0})  # one long job, two devices: half the sweep could be saved
    assert v.worth == [("g-a", 2)]
    assert v.bound_s == pytest.approx(5.0 + 1000 * 0.5 * (1 - MARGIN))


def test_trials_that_cost_more_than_they_can_save_are_skipped():
    v = _decide({"a": 25.0}, cost=30.0)  # at most ~10 s to gain for 30 s of trials
    assert v.worth == [] and "would cost" in v.reason


def test_the_bound_rests_on_fully_measured_counts_only():
    """A count with configs still open is no basis: one job measured on 1 device (1 s/step) and, partly,
    on 2 (0.9 s/step: its other configs are open), 4 devices: the 4-device stand-in scales the 1-device
    config, not the partly measured 2-device one."""
    t = ProfileTable.model_validate({"cluster": {"nodes": [{"name": "n0", "gpus": 4}]}, "jobs": [
        {"name": "a", "configs": [
            {"parallelism": "single", "gpus": 1, "runtime_s": 1005.0, "step_s": 1.0, "startup_s": 5.0},
            {"parallelism": "ddp", "gpus": 2, "runtime_s": 905.0, "step_s": 0.9, "startup_s": 5.0}]}]})
    v = decide(t, {"a": [2, 4]}, {"a": {1}}, {"a": 1000}, {"a": "g"}, predict, tolerance=0.01,
               trial_cost_s=lambda g, n: 1.0)
    assert v.bound_s == pytest.approx(5.0 + 1000 * 0.25 * (1 - MARGIN))
    assert ("g", 4) in v.worth


def test_a_count_without_a_memory_unconstrained_basis_is_measured():
    """Spilling on one GPU says nothing about eight (memory, not compute, limits it): with no bounding
    count below, the larger counts are measured outright, whatever they cost."""
    v = decide(measured({"a": 1005.0}, devices=8), {"a": [2, 4, 8]}, {"a": set()}, {"a": 1000}, {"a": "g"},
               predict, tolerance=0.01, trial_cost_s=lambda g, n: 1e9)
    assert v.worth == [("g", 2), ("g", 4), ("g", 8)] and "bound" in v.reason
