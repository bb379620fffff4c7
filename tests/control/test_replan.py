"""Re-plan: remaining work only, observed rates, keep-vs-preempt by expected gain, one winner per plan."""

import threading
import time

from saturn_airflow.control import replan
from saturn_airflow.spec.plan import check_plan
from saturn_airflow.planner import plan_table
from saturn_airflow.spec.profile_table import parse_profile_table
from saturn_airflow.store.records import PlanStore, ProgressStore, Store

NOW = 2_000_000.0


def table_two():
    return parse_profile_table({
        "cluster": {"nodes": [{"name": "n", "gpus": 2}]},
        "jobs": [
            {"name": "a", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 100},
                                      {"parallelism": "ddp", "gpus": 2, "runtime_s": 50}]},
            {"name": "b", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 100}]},
        ]})


def table_four():
    return parse_profile_table({
        "cluster": {"nodes": [{"name": "n", "gpus": 2}]},
        "jobs": [{"name": f"j{i}", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 60 + 10 * i},
                                               {"parallelism": "ddp", "gpus": 2, "runtime_s": 35 + 5 * i}]}
                 for i in range(4)]})


def rec(plan, job, state, step, total, rate=None):
    return {"state": state, "step": step, "total": total, "rate_steps_per_s": rate, "plan_id": plan.plan_id,
            "started_at": NOW - 10, "updated_at": NOW, **({"finished_at": NOW - 1} if state == "done" else {})}


def test_remaining_jobs_only_with_observed_rates():
    t = table_four()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    first = sorted(p.assignments, key=lambda a: a.start_s)
    done, running = first[0].job, first[1].job
    records = {done: rec(p, done, "done", 100, 100), running: rec(p, running, "running", 20, 100, rate=0.1)}
    res = replan.replan_plan(t, p, records, {j.name: 100 for j in t.jobs}, solver="highs", time_limit=5,
                             restart_overhead_s=5, reason="test drift")
    child = res.plan
    assert child.parent_plan_id == p.plan_id and child.plan_id != p.plan_id
    assert child.model_extra["reason"] == "test drift"
    assert done not in {a.job for a in child.assignments}
    assert {a.job for a in child.assignments} == {a.job for a in p.assignments} - {done}
    assert res.observed[running].slowdown > 1.5  # observed 10 s/step vs the profiled rate
    # the child is valid against the remaining table it was planned on
    sub, _ = replan.remaining_table(t, p, res.observed, keep=set(child.model_extra["kept"]), restart_overhead_s=5)
    check_plan(child, sub)
    assert set(child.model_extra["kept"]) | set(child.model_extra["preempted"]) == {running}


def _a_running_alone(overhead):
    t = table_two()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    # force the situation "a runs on one GPU, b already finished": a at step 10/100, 1 step/s (as profiled)
    a = p.assignment("a")
    assert a.gpus == 1  # a and b side by side (100 s) beats a on both GPUs then b (150 s)
    records = {"a": rec(p, "a", "running", 10, 100, rate=1.0), "b": rec(p, "b", "done", 100, 100)}
    return replan.replan_plan(t, p, records, {"a": 100, "b": 100}, solver="highs", time_limit=5,
                              restart_overhead_s=overhead)


def test_preempts_when_a_faster_config_wins_and_keeps_otherwise():
    res = _a_running_alone(overhead=5)
    assert res.option == "preempt-all" and res.plan.model_extra["preempted"] == ["a"]
    assert res.plan.assignment("a").gpus == 2 and abs(res.plan.makespan_s - (45 + 5)) < 1e-6
    res = _a_running_alone(overhead=60)  # restarting costs more than it gains
    assert res.option == "keep-all" and res.plan.model_extra["kept"] == ["a"]
    a = res.plan.assignment("a")
    assert a.start_s == 0 and abs(a.end_s - 90) < 1e-6


def test_two_concurrent_replans_leave_exactly_one_version(tmp_path):
    store = Store(str(tmp_path))
    ps = PlanStore(store)
    t = table_four()
    p = ps.publish(plan_table(t, solver="highs", time_limit=5, workload="w"))
    prog = ProgressStore(store, sweep=p.sweep)
    j = sorted(p.assignments, key=lambda a: a.start_s)[0].job
    prog.put("w", j, rec(p, j, "running", 10, 100, rate=0.2))
    out = []
    barrier = threading.Barrier(2)

    def go(owner):
        barrier.wait()
        res = replan.replan_from_store(ps, prog, t, p.plan_id, {x.name: 100 for x in t.jobs}, owner=owner,
                                       solver="highs", time_limit=3)
        if res.plan is not None:
            ps.publish(res.plan)
        out.append((owner, res))

    threads = [threading.Thread(target=go, args=(f"run{i}",)) for i in range(2)]
    [th.start() for th in threads]
    [th.join(120) for th in threads]
    winners = [o for o, r in out if r.plan is not None]
    assert len(winners) == 1
    assert len(ps.ids()) == 2 and ps.superseded_by(p.plan_id) is not None
    # the winner's retry keeps its claim; a third party never gets one
    assert replan.claim_replan(ps, p.plan_id, winners[0])
    assert not replan.claim_replan(ps, p.plan_id, "someone-else")


def test_nothing_remains():
    t = table_two()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    recs = {j: rec(p, j, "done", 100, 100) for j in ("a", "b")}
    res = replan.replan_plan(t, p, recs, {"a": 100, "b": 100})
    assert res.plan is None and "every job has finished" in res.message


def test_unobserved_jobs_get_the_machine_wide_slowdown_not_the_stragglers():
    t = table_four()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    first = sorted(p.assignments, key=lambda a: (a.start_s, a.job))
    a0, a1 = first[0], first[1]

    def step_s(job):
        return replan._step_s(replan._config_of(t, p, job), 100)

    # a0 runs 10x slower than profiled (straggler), a1 1.5x (the machine is busier than when profiled)
    recs = {a0.job: rec(p, a0.job, "running", 10, 100, rate=1 / (10 * step_s(a0.job))),
            a1.job: rec(p, a1.job, "running", 10, 100, rate=1 / (1.5 * step_s(a1.job)))}
    ob = replan.observe(p, t, recs, {j.name: 100 for j in t.jobs})
    assert abs(ob[a0.job].slowdown - 10) < 1e-6 and abs(ob[a1.job].slowdown - 1.5) < 1e-6
    pending = [j for j, o in ob.items() if o.state == "pending"]
    assert pending and all(abs(ob[j].slowdown - 1.5) < 1e-6 for j in pending)
    # one observation alone says nothing about the machine
    ob = replan.observe(p, t, {a0.job: recs[a0.job]}, {j.name: 100 for j in t.jobs})
    assert all(o.slowdown == 1.0 for o in ob.values() if o.state == "pending")


def test_a_job_whose_task_holds_its_lease_counts_as_running(tmp_path):
    from saturn_airflow.execution import leases

    store = Store(str(tmp_path))
    t = table_four()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    job = sorted(p.assignments, key=lambda a: a.start_s)[0].job
    with leases.acquire(store, [leases.job_key("w", job, sweep=p.sweep)], {"job": job, "plan_id": p.plan_id}):
        recs = replan.with_leased_jobs(store, p, {})
        assert recs[job]["state"] == "running" and recs[job]["leased_only"]
        res = replan.replan_plan(t, p, recs, {j.name: 100 for j in t.jobs}, solver="highs", time_limit=3)
        assert job in res.plan.model_extra["kept"] + res.plan.model_extra["preempted"]
    assert replan.with_leased_jobs(store, p, {}) == {}


def test_the_records_steady_rate_now_beats_the_watchs_and_fills_in_for_none(tmp_path):
    store = Store(str(tmp_path))
    t = table_four()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    ps = PlanStore(store)
    p = ps.publish(p)
    prog = ProgressStore(store, sweep=p.sweep)
    a, c = sorted(p.assignments, key=lambda x: (x.start_s, x.job))[:2]
    now = time.time()
    trail = [(now - 30 + 0.5 * i, i) for i in range(61)]  # 2 steps/s for 30 s, past warm-up
    prog.put("w", a.job, {"state": "running", "plan_id": p.plan_id, "step": 60, "total": 100, "first_step_at": now - 30,
                          "updated_at": now, "trail": trail, "started_at": now - 32})
    prog.put("w", c.job, {"state": "running", "plan_id": p.plan_id, "step": 3, "total": 100, "first_step_at": now - 2,
                          "updated_at": now, "trail": [(now - 2, 0), (now, 3)], "started_at": now - 4})  # warming up
    res = replan.replan_from_store(ps, prog, t, p.plan_id, {j.name: 100 for j in t.jobs}, owner="me", solver="highs",
                                   time_limit=3, rates={a.job: 0.1, c.job: 0.3})
    assert abs(res.observed[a.job].rate_steps_per_s - 2.0) < 0.05  # its own steady rate, fresher than the watch's
    assert res.observed[c.job].rate_steps_per_s == 0.3  # no steady rate yet: the watch's stands in
    assert res.plan.model_extra["start_steps"] == {a.job: 60, c.job: 3}


def table_two_nodes():
    return parse_profile_table({
        "cluster": {"nodes": [{"name": "node0", "gpus": 1}, {"name": "node1", "gpus": 1}]},
        "jobs": [{"name": "long", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 200}]},
                 {"name": "short", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 50}]}]})


def _slowed_on_its_node(extra_replan=None):
    """`long` runs 10x slower than profiled on its node; `short` is done on the other node at profiled speed."""
    t = table_two_nodes()
    p = plan_table(t, solver="highs", time_limit=5, workload="w")
    slow_node, other = p.assignment("long").node, p.assignment("short").node
    assert slow_node != other
    if extra_replan is not None:
        p = p.model_copy(update={"replan": extra_replan(slow_node, other)})
    records = {"long": {**rec(p, "long", "running", 20, 200, rate=0.1), "node": slow_node},
               "short": {**rec(p, "short", "done", 50, 50, rate=1.0), "node": other}}
    res = replan.replan_plan(t, p, records, {"long": 200, "short": 50}, solver="highs", time_limit=5,
                             restart_overhead_s=10)
    return res, slow_node, other


def test_a_job_slowed_on_its_node_moves_to_a_node_at_speed():
    res, slow_node, other = _slowed_on_its_node()
    assert res.option == "preempt-all" and res.plan.model_extra["preempted"] == ["long"]
    moved = res.plan.assignment("long")
    assert moved.node == other  # 180 steps at 1 step/s + restart there, instead of 1800 s where it is
    assert res.plan.makespan_s < 250
    assert res.plan.model_extra["replan"]["slow_on"] == {"long": slow_node}


def test_a_job_slow_again_after_a_move_is_slow_everywhere():
    """Moved once for being slow (slow_on names its old node) and slow again on its new one: the slowdown is
    the job's own, so a second move would gain nothing and it is kept."""
    res, slow_node, other = _slowed_on_its_node(lambda slow, oth: {"slow_on": {"long": oth}})
    assert res.option == "keep-all" and res.plan.assignment("long").node == slow_node
