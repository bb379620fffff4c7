"""The drift watch over time, on simulated clocks: the runner's real ProgressReporter writes records
into a real store, the drift watch (tasks.drift.drift_step + DriftWatch) looks every poll, a drift
event is re-planned by the real re-plan and the child plan watched in turn.

- a warm-up 10x slower than steady never re-plans;
- a 3x slowdown half-way re-plans exactly once, within two looks of the projection crossing the
  threshold;
- one slow job does not make the others' projection slower; two slow jobs on a node do.
"""

from __future__ import annotations

import heapq
import json

import pytest

from saturn_airflow.control import replan
from saturn_airflow.control.drift import DriftWatch
from saturn_airflow.control.projection import project
from saturn_airflow.execution import runner
from saturn_airflow.planner import plan_table
from saturn_airflow.spec.profile_table import parse_profile_table
from saturn_airflow.store.files import PlanStore, ProgressStore, Store
from saturn_airflow.tasks import drift as drift_steps

T0 = 1_700_000_000.0
STEP_S = 0.05  # steady: 20 steps/s
STEPS = 1200  # 60 s of steps
STARTUP_S = 2.0
POLL_S = 5.0


def table(jobs, nodes=(("n", 2),)):
    cfg = {"parallelism": "single", "gpus": 1, "runtime_s": STARTUP_S + STEPS * STEP_S, "step_s": STEP_S,
           "startup_s": STARTUP_S}
    return parse_profile_table({"cluster": {"nodes": [{"name": n, "gpus": g} for n, g in nodes]},
                                "jobs": [{"name": j, "configs": [cfg]} for j in jobs]})


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def publish_root(store, tbl):
    plan = plan_table(tbl, solver="highs", time_limit=5, workload="w")
    data = plan.model_dump(mode="json")
    data["drift"] = {"threshold": 0.1, "min_s": 20.0}
    data["table_ref"] = "tables/root.json"
    from saturn_airflow.spec.plan import Plan

    plan = Plan.model_validate(data)
    store.write_json("tables/root.json", json.loads(tbl.to_json()))
    return PlanStore(store).publish(plan)


def simulate(tmp_path, monkeypatch, step_time, *, jobs=("a", "b"), end_s=600.0, warmup_s=10.0):
    """Run `jobs` as Airflow would run the current plan (a job launches once the jobs it takes GPUs
    over from are done), each step taking `step_time(job, step, seconds_since_launch)`; the drift
    watch looks every POLL_S and a drift event is re-planned and published. Returns the looks
    (time, plan_id, event), the plans and the store."""
    from saturn_airflow.spec.plan import Plan

    store = Store(str(tmp_path))
    tbl = table(jobs)
    plan = publish_root(store, tbl)
    clock = Clock(T0)
    monkeypatch.setattr(runner.time, "time", clock)
    monkeypatch.setattr(drift_steps.time, "time", clock)
    monkeypatch.setenv("AIRFLOW__SATURN__DRIFT_WINDOW_S", "5")
    monkeypatch.setenv("AIRFLOW__SATURN__DRIFT_WARMUP_S", str(warmup_s))
    monkeypatch.setenv("AIRFLOW__SATURN__DRIFT_CHECKS", "2")
    queue: list = []
    reps, launched, steps, done = {}, {}, {}, set()
    current, t0, watch, looks = plan, T0, DriftWatch(2, 5.0), []

    def launch_ready(t):
        for a in current.assignments:
            if a.job not in launched and all(b in done for b in a.after):
                launched[a.job] = None
                heapq.heappush(queue, (t + STARTUP_S, 0, a.job, "launch"))

    launch_ready(T0)
    heapq.heappush(queue, (T0 + POLL_S, 1, "", "look"))
    while queue:
        t, _, job, what = heapq.heappop(queue)
        if t > T0 + end_s:
            break
        clock.t = t
        if what == "launch":
            rep = runner.ProgressReporter(workload="w", job=job, plan_id=current.plan_id, sweep=plan.sweep,
                                          parallelism="single",
                                          device_ids=[0], store_url=str(tmp_path), every_s=3.0)
            rep.start(0, STEPS)
            reps[job], launched[job], steps[job] = rep, t, 0
            heapq.heappush(queue, (t + step_time(job, 0, 0.0), 0, job, "step"))
        elif what == "step":
            steps[job] += 1
            reps[job].update(steps[job], 1.0)
            if steps[job] >= STEPS:
                reps[job].finish("done", STEPS)
                done.add(job)
                launch_ready(t)
            else:
                heapq.heappush(queue, (t + step_time(job, steps[job], t - launched[job]), 0, job, "step"))
        else:
            event = drift_steps.drift_step(str(tmp_path), current.plan_id, t0, now=t, watch=watch)
            looks.append((t, current.plan_id, event, watch.streak, ProgressStore(store, sweep=plan.sweep).all("w")))
            if event and event["kind"] == "drift":
                res = replan.replan_from_store(PlanStore(store), ProgressStore(store, sweep=plan.sweep), tbl, current.plan_id,
                                               {j: STEPS for j in jobs}, owner=f"run-{t}", solver="highs",
                                               time_limit=3, restart_overhead_s=5)
                data = res.plan.model_dump(mode="json")
                data["table_ref"] = "tables/root.json"
                current = PlanStore(store).publish(Plan.model_validate(data))
                t0, watch = t, DriftWatch(2, 5.0)  # the child's DAG run starts now, with its own watch
                assert not current.model_extra["preempted"]  # one device per job: keeping is never worse
                launch_ready(t)
            elif event and event["kind"] == "done":
                break
            heapq.heappush(queue, (t + POLL_S, 1, "", "look"))
    return looks, list(PlanStore(store).plans()), store


def fired(looks):
    return [(t, pid) for t, pid, e, *_ in looks if e and e["kind"] == "drift"]


@pytest.mark.parametrize("floor_s,slow_s,who", [(10.0, 4.0, "abc"), (2.0, 9.0, "a")])
def test_a_warm_up_ten_times_slower_than_steady_never_replans(tmp_path, monkeypatch, floor_s, slow_s, who):
    # the first seconds of every launch (of `who`) run 10x slower than steady (what that really costs,
    # 0.9 s a second of it, stays within the thresholds). With the 10 s warm-up floor the estimate never
    # sees it; with a 2 s floor one window sees the tail of a's warm-up (a alone, so it is not a slowdown
    # the whole node shares) and that look is late, and the next look is not.
    def step_time(job, step, since):
        return 10 * STEP_S if (since < slow_s and job in who) else STEP_S

    looks, plans, store = simulate(tmp_path, monkeypatch, step_time, jobs=("a", "b", "c"), warmup_s=floor_s)
    assert fired(looks) == [] and len(plans) == 1
    assert looks[-1][2]["kind"] == "done"
    if floor_s < slow_s:
        assert max(streak for *_, streak, _ in looks) == 1  # late once, never twice in a row
    # the records themselves said far worse: the first one's average rate (start-up and warm-up) is 10x
    # below steady, which projected the plan several times late; the estimate never used it
    first = ProgressStore(store, sweep=plans[0].sweep).get("w", "a")
    assert first["state"] == "done"


def test_a_three_fold_slowdown_half_way_replans_exactly_once_within_two_looks(tmp_path, monkeypatch):
    slow_from = STEPS // 2

    def step_time(job, step, since):
        return 3 * STEP_S if (job == "a" and step >= slow_from) else STEP_S

    looks, plans, store = simulate(tmp_path, monkeypatch, step_time, jobs=("a", "b", "c"))
    drift = fired(looks)
    assert len(drift) == 1 and len(plans) == 2, drift
    root = next(p for p in plans if not p.parent_plan_id)
    # when did the projection cross the threshold? the first look at which the projection with a's
    # true current speed (1/3) is late past both thresholds
    t_slow = T0 + STARTUP_S + slow_from * STEP_S
    crossed = None
    for t, pid, e, _, recs in looks:
        if pid != root.plan_id or t < t_slow:
            continue
        proj = project(root, recs, t, T0, rates={"a": 1 / (3 * STEP_S)})
        late = proj.projected_makespan_s - root.makespan_s
        if late > 0.1 * root.makespan_s and late > 20:
            crossed = t
            break
    assert crossed is not None
    root_looks = [t for t, pid, *_ in looks if pid == root.plan_id]
    assert root_looks.index(drift[0][0]) - root_looks.index(crossed) <= 2
    # the child plan, planned at the observed rate, never drifts again
    child = next(p for p in plans if p.parent_plan_id)
    assert all(not e or e["kind"] != "drift" for t, pid, e, *_ in looks if pid == child.plan_id)
    assert child.model_extra["replan"]["slowdown"]["a"] == pytest.approx(3.0, rel=0.15)


def test_one_slow_job_leaves_the_others_alone_two_slow_jobs_slow_the_node(tmp_path):
    tbl = table(["a", "b", "c", "d"])
    plan = plan_table(tbl, solver="highs", time_limit=5, workload="w")
    running = [a.job for a in plan.assignments if a.start_s == 0]
    pending = [a.job for a in plan.assignments if a.start_s > 0]
    now = T0 + 30

    def rec(slow):
        trail = [(T0 + 2 + 0.5 * i, int(i * 0.5 / (STEP_S * slow))) for i in range(57)]
        return {"state": "running", "plan_id": plan.plan_id, "step": trail[-1][1], "total": STEPS,
                "first_step_at": T0 + 2, "started_at": T0, "updated_at": trail[-1][0], "trail": trail}

    one = project(plan, {running[0]: rec(3.0), running[1]: rec(1.0)}, now, T0, table=tbl)
    assert one.node_slowdown == {"n": 1.0}
    assert one.jobs[running[0]].slowdown == pytest.approx(3.0, rel=0.05)
    both = project(plan, {running[0]: rec(3.0), running[1]: rec(1.5)}, now, T0, table=tbl)
    assert both.node_slowdown["n"] == pytest.approx(1.5, rel=0.05)
    for j in pending:  # the node's factor stretches the jobs that have not run
        p1, p2 = one.jobs[j], both.jobs[j]
        assert (p2.end_s - p2.start_s) == pytest.approx(STARTUP_S + 1.5 * (p1.end_s - p1.start_s - STARTUP_S), rel=0.05)
    ob = replan.observe(plan, tbl, {running[0]: rec(3.0), running[1]: rec(1.0)}, {j: STEPS for j in "abcd"})
    assert all(ob[j].slowdown == 1.0 for j in pending)


def test_a_stall_shows_even_before_a_steady_rate(tmp_path, monkeypatch):
    # a's step 20 (1 s into its launch, well inside the warm-up) takes 80 s
    def step_time(job, step, since):
        return 80.0 if (job == "a" and step == 20) else STEP_S

    looks, plans, store = simulate(tmp_path, monkeypatch, step_time, jobs=("a", "b", "c"))
    assert len(fired(looks)) == 1 and len(plans) == 2


def test_a_late_plan_whose_remaining_jobs_have_no_other_config_does_not_replan():
    from saturn_airflow.control.drift import assess

    tbl = table(["a", "b"])  # one config each: single on 1 device
    plan = plan_table(tbl, solver="highs", time_limit=5, workload="w")

    def rec(slow):
        trail = [(T0 + 2 + 0.5 * i, int(i * 0.5 / (STEP_S * slow))) for i in range(57)]
        return {"state": "running", "plan_id": plan.plan_id, "step": trail[-1][1], "total": STEPS,
                "first_step_at": T0 + 2, "started_at": T0, "updated_at": trail[-1][0], "trail": trail}

    recs = {"a": rec(3.0), "b": rec(1.0)}
    r = assess(plan, recs, T0 + 30, T0, threshold=0.1, min_s=10, table=tbl)
    assert not r.should_replan and "no choice" in r.reason and r.verdict == "late_no_choice"
    assert assess(plan, recs, T0 + 30, T0, threshold=0.1, min_s=10).should_replan  # without a table: assume one


def test_a_late_job_in_its_only_config_can_still_move_to_another_node():
    from saturn_airflow.control.drift import assess

    tbl = table(["a", "b"], nodes=(("n0", 1), ("n1", 1)))  # one config each, but two nodes it fits
    plan = plan_table(tbl, solver="highs", time_limit=5, workload="w")
    assert {a.node for a in plan.assignments} == {"n0", "n1"}
    slow = plan.assignments[0].job

    def rec(slowdown):
        trail = [(T0 + 2 + 0.5 * i, int(i * 0.5 / (STEP_S * slowdown))) for i in range(57)]
        return {"state": "running", "plan_id": plan.plan_id, "step": trail[-1][1], "total": STEPS,
                "first_step_at": T0 + 2, "started_at": T0, "updated_at": trail[-1][0], "trail": trail}

    recs = {a.job: rec(3.0 if a.job == slow else 1.0) for a in plan.assignments}
    r = assess(plan, recs, T0 + 30, T0, threshold=0.1, min_s=10, table=tbl)
    assert r.should_replan, r.reason


def test_a_slowdown_every_node_shares_is_not_a_reason_to_replan():
    from saturn_airflow.control.drift import VERDICTS, assess

    tbl = table(["a", "b", "c", "d"])
    plan = plan_table(tbl, solver="highs", time_limit=5, workload="w")
    running = [a.job for a in plan.assignments if a.start_s == 0]

    def rec(slow):
        trail = [(T0 + 2 + 0.5 * i, int(i * 0.5 / (STEP_S * slow))) for i in range(57)]
        return {"state": "running", "plan_id": plan.plan_id, "step": trail[-1][1], "total": STEPS,
                "first_step_at": T0 + 2, "started_at": T0, "updated_at": trail[-1][0], "trail": trail}

    both = assess(plan, {running[0]: rec(2.0), running[1]: rec(2.0)}, T0 + 30, T0, threshold=0.1, min_s=10, table=tbl)
    assert both.node_slowdown["n"] == pytest.approx(2.0, rel=0.05) and not both.should_replan  # the one node: nothing to gain
    assert both.verdict == "on_time" and "within threshold" in both.reason and both.verdict in VERDICTS
    one = assess(plan, {running[0]: rec(3.0), running[1]: rec(1.0)}, T0 + 30, T0, threshold=0.1, min_s=10, table=tbl)
    assert one.should_replan and one.verdict == "late"  # one job slower than the rest: moving work can help
