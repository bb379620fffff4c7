"""Successive halving policy: quotas, asynchronous verdicts equal to synchronous halving in every
arrival order (seeded random groups, values and orders), never a deadlock, Ray Tune's rule."""

import math
import random

import pytest

from saturn_airflow.control import early_stop as es


def test_quotas():
    assert es.quotas(12, 0.5, 4) == [6, 3, 2, 1]
    assert es.quotas(12, 1 / 3, 2) == [4, 2]
    assert es.quotas(3, 0.5, 3) == [2, 1, 1]
    assert es.quotas(1, 0.1, 2) == [1, 1]


def run_async(members, rungs, keep, goal, truth, rng):
    """Advance random runnable jobs one segment at a time, deciding after every arrival, as the
    sweep does; return the jobs that reached the end and how often something had to wait."""
    recorded = {m: {} for m in members}
    position = {m: 0 for m in members}  # rungs passed
    paused, stopped, finished = set(), set(), set()
    waits = 0
    while True:
        verdict = es.decide(members, rungs, keep, goal, recorded)
        for m, v in verdict.items():
            if v.action == es.STOP:
                stopped.add(m)
                paused.discard(m)
            elif v.action == es.PROMOTE and m in paused:
                paused.discard(m)
        waits += sum(1 for m in paused if verdict[m].action == es.WAIT)
        can = [m for m in members if m not in paused | stopped | finished]
        if not can:
            assert paused == set(), f"deadlock: {sorted(paused)} wait with nothing left to run"
            return finished, waits
        m = rng.choice(can)
        if position[m] == len(rungs):
            finished.add(m)
        else:
            recorded[m][rungs[position[m]]] = truth[m][rungs[position[m]]]
            position[m] += 1
            paused.add(m)


@pytest.mark.parametrize("seed", range(40))
def test_asynchronous_verdicts_keep_what_synchronous_halving_keeps(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 14)
    members = [f"j{i:02d}" for i in range(n)]
    rungs = sorted(rng.sample(range(10, 200), rng.randint(1, 4)))
    keep = rng.choice([0.25, 1 / 3, 0.5, 0.7])
    goal = rng.choice(["min", "max"])
    truth = {m: {r: rng.choice([rng.random(), rng.random(), 0.5, math.nan]) for r in rungs} for m in members}
    want = set(es.synchronous_survivors(members, rungs, keep, goal, truth))
    for order_seed in range(5):
        got, _ = run_async(members, rungs, keep, goal, truth, random.Random(1000 * seed + order_seed))
        assert got == want
    assert len(want) == es.quotas(n, keep, len(rungs))[-1]


def test_verdicts_name_rank_and_quota_and_nan_ranks_last():
    members = ["a", "b", "c", "d"]
    v = es.decide(members, [10], 0.5, "min", {"a": {10: 0.1}, "b": {10: math.nan}, "c": {10: 0.3}})
    assert v["a"].action == es.PROMOTE  # 0 better + 1 still to come < 2
    assert v["c"].action == es.WAIT and (v["c"].rank, v["c"].arrived, v["c"].quota) == (2, 3, 2)
    assert v["b"].action == es.STOP and v["b"].rank == 3
    assert v["d"].action == es.RUN and v["d"].rung is None
    assert v["b"].describe() == "stopped at rung 10: rank 3 of 3 arrived, 2 go on"


def test_a_job_gone_for_good_is_no_competitor():
    v = es.decide(["a", "b", "c"], [10], 1 / 3, "max", {"a": {10: 1.0}, "b": {10: 2.0}}, gone={"c"})
    assert v["b"].action == es.PROMOTE and v["a"].action == es.STOP


def test_best_and_ties_by_name():
    assert es.best(["b", "a", "c"], {"a": 1.0, "b": 1.0, "c": None}, "min") == "a"
    assert es.best(["a", "b"], {"a": 1.0, "b": 2.0}, "max") == "b"
    assert es.best(["a"], {"a": None}, "min") is None


def test_ray_asha_rule():
    assert es.ray_asha_continues(5.0, [], 0.5, "min")  # the first at a rung always goes on
    assert es.ray_asha_continues(1.0, [2.0], 0.5, "min") and not es.ray_asha_continues(3.0, [2.0], 0.5, "min")
    # median of 1, 2, 3, 4 is 2.5: with keep 0.5 a loss of 2.4 goes on, 2.6 stops
    assert es.ray_asha_continues(2.4, [1, 2, 3, 4], 0.5, "min")
    assert not es.ray_asha_continues(2.6, [1, 2, 3, 4], 0.5, "min")
    # keep 1/3, goal max: the 2/3 quantile of 0..9 is 6
    assert es.ray_asha_continues(6.0, list(range(10)), 1 / 3, "max")
    assert not es.ray_asha_continues(5.9, list(range(10)), 1 / 3, "max")
    assert not es.ray_asha_continues(math.nan, [1.0], 0.5, "min")
    assert es.percentile([3, 1, 2], 50) == 2 and es.percentile([1, 2], 25) == 1.25
