"""The drift decision: projected makespan from progress records vs the plan."""

from saturn_airflow.control.drift import assess
from saturn_airflow.spec.plan import Assignment, Plan, SolverInfo, fill_after

T0 = 1_000_000.0


def plan2():
    # gpu0: a (0-100) then c (100-200); gpu1: b (0-150)
    asg = [Assignment(job="a", parallelism="single", gpus=1, node="n", gpu_ids=[0], start_s=0, end_s=100),
           Assignment(job="b", parallelism="single", gpus=1, node="n", gpu_ids=[1], start_s=0, end_s=150),
           Assignment(job="c", parallelism="single", gpus=1, node="n", gpu_ids=[0], start_s=100, end_s=200)]
    fill_after(asg)
    return Plan(plan_id="p1", workload="w", created_at="t", makespan_s=200, lower_bound_s=150,
                solver=SolverInfo(name="x", status="optimal"), assignments=asg)


def rec(state, step, total, rate=None, started=0.0, finished=None, plan_id="p1"):
    r = {"state": state, "step": step, "total": total, "rate_steps_per_s": rate, "started_at": T0 + started,
         "updated_at": T0 + started, "plan_id": plan_id}
    if finished is not None:
        r["finished_at"] = T0 + finished
    return r


def test_on_track_does_not_replan():
    r = assess(plan2(), {"a": rec("running", 50, 100, rate=1.0), "b": rec("running", 50, 150, rate=1.0)},
               now=T0 + 50, t0=T0)
    assert not r.should_replan and abs(r.projected_makespan_s - 200) < 1e-6
    assert r.running == ["a", "b"] and r.pending == ["c"]


def test_slow_job_pushes_its_successor_and_triggers():
    # a runs at a third of its planned speed: ends at 50 + 50*3 = 200, so c ends at 300 (+100 s, +50%)
    r = assess(plan2(), {"a": rec("running", 50, 100, rate=1 / 3), "b": rec("running", 50, 150, rate=1.0)},
               now=T0 + 50, t0=T0)
    assert r.should_replan
    assert abs(r.jobs["c"].start_s - 200) < 1e-6 and abs(r.projected_makespan_s - 300) < 1e-6
    assert "later than the planned" in r.reason


def test_threshold_needs_both_fraction_and_seconds():
    recs = {"a": rec("running", 50, 100, rate=1 / 3), "b": rec("running", 50, 150, rate=1.0)}
    assert not assess(plan2(), recs, now=T0 + 50, t0=T0, threshold=0.6).should_replan  # +50% < 60%
    assert not assess(plan2(), recs, now=T0 + 50, t0=T0, min_s=120).should_replan  # +100 s < 120 s
    assert assess(plan2(), recs, now=T0 + 50, t0=T0, threshold=0.4, min_s=90).should_replan


def test_early_finish_never_triggers_and_all_done_ends():
    recs = {"a": rec("done", 100, 100, finished=20), "b": rec("done", 150, 150, finished=30),
            "c": rec("running", 10, 100, rate=10.0, started=20)}
    r = assess(plan2(), recs, now=T0 + 21, t0=T0)
    assert not r.should_replan and r.projected_makespan_s < 200
    recs["c"] = rec("done", 100, 100, finished=40)
    r = assess(plan2(), recs, now=T0 + 41, t0=T0)
    assert r.all_done and not r.should_replan and r.reason == "every job has finished"


def test_failed_job_counts_as_finished_and_preempted_elsewhere_as_pending():
    recs = {"a": rec("failed", 10, 100, finished=10), "b": rec("preempted", 50, 150, plan_id="older")}
    r = assess(plan2(), recs, now=T0 + 10, t0=T0)
    assert r.failed == ["a"] and "b" in r.pending


def test_dict_roundtrip_is_json():
    import json

    json.dumps(assess(plan2(), {}, now=T0, t0=T0).to_dict())


def test_recent_rates_override_the_average():
    recs = {"a": rec("running", 50, 100, rate=1.0), "b": rec("running", 50, 150, rate=1.0)}
    assert not assess(plan2(), recs, now=T0 + 50, t0=T0).should_replan
    assert assess(plan2(), recs, now=T0 + 50, t0=T0, rates={"a": 0.25}).should_replan


def test_the_rate_estimate_follows_a_slowdown():
    from saturn_airflow.control.rates import RateWindow, estimate
    from saturn_airflow.spec.progress import ProgressRecord

    trail, step = [], 0
    for i in range(200):  # 2 steps/s for 50 s, then 0.2 steps/s
        t = i * 0.5
        step += 1 if t < 50 else (1 if i % 10 == 0 else 0)
        trail.append((T0 + t, step))
    rec = ProgressRecord(state="running", step=step, total=1000, first_step_at=T0, updated_at=T0 + 99.5,
                         trail=trail[-120:])
    assert abs(estimate(rec, RateWindow(window_s=30, window_steps=2)).rate - 0.2) < 0.05


def test_thresholds_double_with_each_replan_in_the_lineage():
    from saturn_airflow.tasks.drift import drift_settings

    p = plan2()
    data = p.model_dump(mode="json")
    data["drift"] = {"threshold": 0.1, "min_s": 20}
    from saturn_airflow.spec.plan import Plan

    q = Plan.model_validate(data)
    assert drift_settings(q) == {"threshold": 0.1, "min_s": 20.0}
    assert drift_settings(q, depth=2) == {"threshold": 0.4, "min_s": 80.0}


def test_no_replan_before_any_job_reports_progress():
    # 100 s in and nothing reported: late on paper, but only start-up latency; no re-plan yet
    r = assess(plan2(), {}, now=T0 + 100, t0=T0, min_s=10)
    assert r.projected_makespan_s > 250 and not r.should_replan and "no job has reported" in r.reason
    # a job starting up (its task holds the lease, no rate yet) is projected from when it started
    r = assess(plan2(), {"a": {"state": "running", "plan_id": "p1", "started_at": T0 + 2, "rate_steps_per_s": None}},
               now=T0 + 10, t0=T0, min_s=10)
    assert abs(r.jobs["a"].end_s - 102) < 1e-6 and not r.should_replan
