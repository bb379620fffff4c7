"""The one rate estimate: steady phase only, over a minimum window, None until then."""

from __future__ import annotations

import pytest

from saturn_airflow.control.rates import RateWindow, estimate, estimates
from saturn_airflow.spec.progress import ProgressRecord

T = 1_000.0


def rec(trail, **kw):
    return ProgressRecord(state="running", step=trail[-1][1], total=10_000, first_step_at=trail[0][0],
                          start_step=trail[0][1], updated_at=trail[-1][0], trail=trail, **kw)


def trail(pace, seconds, every=0.5, start=0):
    """Samples of a launch whose step rate at second t is pace(t)."""
    out, step, t = [(T, start)], float(start), 0.0
    while t < seconds:
        step += pace(t) * every
        t += every
        out.append((T + t, int(step)))
    return out


def test_warm_up_never_counts():
    slow_start = trail(lambda t: 2.0 if t < 8 else 20.0, 14)
    w = RateWindow(warmup_s=10, window_s=4, window_steps=10)
    assert estimate(rec(slow_start), w).rate == pytest.approx(20.0, rel=0.1)
    assert estimate(rec(slow_start[:18]), w).rate is None  # still within the first 10 s
    assert "warming up" in estimate(rec(slow_start[:18]), w).why


def test_a_profiled_warm_up_longer_than_the_floor_wins():
    w = RateWindow(warmup_s=2, window_s=2, window_steps=2)
    tr = trail(lambda t: 20.0, 6)
    assert estimate(rec(tr), w.with_profile(5.0)).rate is None  # 6 s: 5 s warm-up + 1 s < the 2 s window
    assert estimate(rec(tr), w.with_profile(1.0)).rate == pytest.approx(20.0, rel=0.1)


def test_a_minimum_window_of_steps_and_seconds():
    w = RateWindow(warmup_s=0, warmup_steps=0, window_s=5, window_steps=10)
    assert estimate(rec(trail(lambda t: 20.0, 4)), w).rate is None  # 4 s < 5 s
    slow = trail(lambda t: 1.0, 12)  # 1 step/s: 10 steps need 10 s
    assert estimate(rec(slow), w).rate == pytest.approx(1.0, rel=0.15)
    assert estimate(rec(trail(lambda t: 1.0, 7)), w).rate is None  # 7 steps, < 3 windows
    assert estimate(rec(trail(lambda t: 0.2, 16)), w).rate == pytest.approx(0.2, rel=0.3)  # 15 s and 2 steps


def test_records_of_older_writers_and_broken_ones():
    legacy = ProgressRecord.parse({"state": "running", "step": 5, "total": 10, "rate_steps_per_s": 1.5,
                                   "recent_rate_steps_per_s": 0.5})
    assert estimate(legacy).rate == 0.5  # the recent rate, then the average
    assert estimate(ProgressRecord.parse({"state": "running", "step": 5, "rate_steps_per_s": 1.5})).rate == 1.5
    assert estimate(None).rate is None
    assert ProgressRecord.parse({"state": "a-state-from-the-future", "step": "x"}).state == "pending"
    assert ProgressRecord.parse("not a dict") is None
    assert estimate(ProgressRecord.parse({"state": "running", "leased_only": True})).rate is None
    got = estimates({"a": legacy, "b": rec(trail(lambda t: 20.0, 20))}, RateWindow(warmup_s=1, window_s=2))
    assert set(got) == {"a", "b"} and got["b"].known
