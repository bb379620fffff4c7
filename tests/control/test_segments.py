"""Rung segments: the first plan stops every grouped job at its first rung; the drift view counts a
paused job as finished here; idle devices plus a promoted job (or a freed device beside a running
job) ask for a rung re-plan; the re-plan plans next segments, leaves losers and waiting jobs out,
resizes a lone survivor and keeps or preempts running ones by the drift re-plan's rule."""

import pytest

from saturn_airflow.control import segments as seg
from saturn_airflow.control.early_stop import PROMOTE, STOP, WAIT
from saturn_airflow.spec.early_stop import Halving
from saturn_airflow.spec.plan import Plan, check_plan
from saturn_airflow.spec.profile_table import parse_profile_table

NOW = 3_000_000.0


def table(jobs):
    return parse_profile_table({
        "cluster": {"nodes": [{"name": "n", "gpus": 2}]},
        "jobs": [{"name": j, "configs": [
            {"parallelism": "single", "gpus": 1, "runtime_s": 100, "startup_s": 5, "step_s": 0.95},
            {"parallelism": "ddp", "gpus": 2, "runtime_s": 60, "startup_s": 5, "step_s": 0.55}]} for j in jobs]})


def halving(jobs, rungs=(25,), keep=0.5, extra=()):
    return Halving(metric="loss", goal="min", keep=keep, rungs=list(rungs), groups={"g": list(jobs)},
                   steps={j: 100 for j in list(jobs) + list(extra)})


def first(jobs, **kw):
    t = table(jobs)
    plan, seg_table = seg.first_plan(t, halving(jobs, **kw), workload="w", solver="highs", time_limit=3)
    return t, plan, seg_table


def rec(plan, state, step, total, rate=None, devices=(0,), finished=False):
    r = {"state": state, "step": step, "total": total, "plan_id": plan.plan_id, "device_ids": list(devices),
         "rate_steps_per_s": rate, "started_at": NOW - 30, "updated_at": NOW}
    if finished or state in ("paused", "done", "stopped"):
        r["finished_at"] = NOW - 1
    return r


def metrics(values):
    return {j: {"points": [{"step": s, "values": {"loss": v}, "plan_id": "p", "t": NOW}
                           for s, v in per.items()]} for j, per in values.items()}


def test_first_plan_holds_every_grouped_job_up_to_its_first_rung():
    t, plan, seg_table = first(["a", "b", "c", "d"])
    check_plan(plan, seg_table)
    es = seg.section(plan)
    assert {j: s["to"] for j, s in es["segments"].items()} == {j: 25 for j in "abcd"}
    assert es["nodes"] == {"n": 2} and es["rungs"] == [25]
    for a in plan.assignments:  # start-up whole, training scaled to 25 of 100 steps
        assert a.runtime_s == pytest.approx({1: 5 + 95 * 0.25, 2: 5 + 55 * 0.25}[a.gpus])
    assert seg.target(plan, "a") == 25
    # the stages after the rung, as the quotas say: 2 survivors for 75 steps each, on the whole cluster
    (stage,) = es["expected"]
    assert (stage["after_rung"], stage["survivors"]) == (25, 2)
    assert stage["makespan_s"] == pytest.approx(5 + 95 * 0.75)  # side by side, one device each
    assert es["expected_sweep_s"] == pytest.approx(plan.makespan_s + stage["makespan_s"])


def test_a_lone_expected_survivor_gets_the_whole_cluster():
    _, plan, _ = first(["a", "b", "c"], keep=1 / 3)
    (stage,) = seg.section(plan)["expected"]
    assert stage["survivors"] == 1 and stage["gpus"] == [2]


def test_the_expected_stages_plan_a_group_named_after_its_model_and_arguments():
    # group: model names a group "gpt(d_model=128,...)": not a job name, so the stand-ins must not carry it
    jobs = ["a", "b", "c", "d"]
    h = Halving(metric="loss", goal="min", keep=0.5, rungs=[25, 50],
                groups={"gpt(d_model=128,n_heads=4,vocab=512)": jobs}, steps={j: 100 for j in jobs})
    plan, seg_table = seg.first_plan(table(jobs), h, workload="w", solver="highs", time_limit=3)
    check_plan(plan, seg_table)
    assert [(s["after_rung"], s["survivors"]) for s in seg.section(plan)["expected"]] == [(25, 2), (50, 1)]


def test_a_job_in_no_group_runs_whole_in_the_first_plan():
    t = table(["a", "b", "solo"])
    h = halving(["a", "b"], extra=["solo"])
    plan, _ = seg.first_plan(t, h, workload="w", solver="highs", time_limit=3)
    assert seg.target(plan, "solo") == 100 and seg.target(plan, "a") == 25
    assert plan.assignment("solo").runtime_s in (pytest.approx(100), pytest.approx(60))


def test_drift_reads_a_paused_job_as_finished_here_and_a_running_one_up_to_its_segment():
    _, plan, _ = first(["a", "b", "c", "d"])
    records = {"a": rec(plan, "paused", 25, 25), "b": rec(plan, "running", 10, 25, rate=1.0),
               "c": rec(plan, "stopped", 25, 25)}
    view = seg.records_for_drift(plan, records)
    assert view["a"]["state"] == "done" and view["c"]["state"] == "done" and view["b"]["total"] == 25
    assert seg.finished_here(plan, "a", records["a"]) and not seg.finished_here(plan, "b", records["b"])


def test_verdicts_come_from_held_out_points_of_this_sweep_only():
    h = halving(["a", "b", "c", "d"])
    m = metrics({"a": {25: 0.5}, "b": {25: 0.9}, "c": {25: 0.1}})
    m["d"] = {"points": [{"step": 25, "values": {"loss": 0.0}, "plan_id": "an-earlier-sweep"}]}
    v = seg.verdicts(h, m, {}, plan_ids={"p"})
    assert (v["c"].action, v["a"].action, v["b"].action, v["d"].action) == (PROMOTE, WAIT, STOP, "run")
    assert seg.verdicts(h, m, {})["d"].action == PROMOTE  # without the filter the old point would count


def test_no_event_while_every_device_is_busy_then_a_promoted_job_asks_for_a_replan():
    t, plan, _ = first(["a", "b", "c", "d"])
    h = seg.halving_of(plan)
    first_two = sorted(plan.assignments, key=lambda a: (a.start_s, a.job))[:2]
    x, y = first_two[0].job, first_two[1].job
    rest = [a.job for a in plan.assignments if a.job not in (x, y)]
    dev = {a.job: a.gpu_ids for a in plan.assignments}
    records = {x: rec(plan, "paused", 25, 25, devices=dev[x]), y: rec(plan, "paused", 25, 25, devices=dev[y])}
    v = seg.verdicts(h, metrics({x: {25: 0.5}, y: {25: 0.9}}), records)
    assert seg.rung_event(plan, records, v) is None  # the plan's other two segments take both devices
    # both later jobs run; one of them finishes best: it is promoted, y (worst of three) lost
    records[rest[0]] = rec(plan, "paused", 25, 25, devices=dev[rest[0]])
    records[rest[1]] = rec(plan, "running", 10, 25, rate=1.0, devices=dev[rest[1]])
    v = seg.verdicts(h, metrics({x: {25: 0.5}, y: {25: 0.9}, rest[0]: {25: 0.1}}), records)
    assert v[rest[0]].action == PROMOTE and v[y].action == STOP and v[x].action == WAIT
    assert seg.to_stop(v, records) == [y]
    ev = seg.rung_event(plan, records, v, now=NOW)
    assert ev["kind"] == "rung" and ev["promoted"] == [rest[0]] and ev["running"] == [rest[1]]

    res = seg.replan_segments(t, plan, [], records, v, reason=ev["reason"], solver="highs", time_limit=3,
                              restart_overhead_s=10, min_gain=0.05)
    child = res.plan
    es = seg.section(child)
    assert {a.job for a in child.assignments} == {rest[0], rest[1]}
    assert es["segments"][rest[0]] == {"from": 25, "to": 100} and es["segments"][rest[1]]["to"] == 25
    assert list(es["stopped"]) == [y] and es["stopped"][y]["rung"] == 25 and es["waiting"] == [x]
    assert child.parent_plan_id == plan.plan_id and seg.is_rung_replan(child)
    assert child.model_extra["kept"] == [rest[1]]  # 15 steps left: not worth a restart
    # the child ran nothing yet: no event until one of its jobs ends
    assert seg.rung_event(child, records, v) is None


def test_a_lone_survivor_resumes_on_both_devices_under_another_parallelism():
    t, plan, _ = first(["a", "b"], keep=0.5)
    records = {"a": rec(plan, "paused", 25, 25), "b": rec(plan, "paused", 25, 25, devices=(1,))}
    v = seg.verdicts(seg.halving_of(plan), metrics({"a": {25: 0.2}, "b": {25: 0.8}}), records)
    assert v["a"].action == PROMOTE and v["b"].action == STOP
    ev = seg.rung_event(plan, records, v)
    assert ev and len(ev["idle"]) == 2
    res = seg.replan_segments(t, plan, [], records, v, reason="rung", solver="highs", time_limit=3,
                              restart_overhead_s=10, min_gain=0.05)
    a = res.plan.assignment("a")
    assert (a.parallelism, a.gpus) == ("ddp", 2)
    assert a.runtime_s == pytest.approx(5 + 55 * 0.75 + 10)  # start-up, 75 of 100 steps, a restart
    assert [x.job for x in res.plan.assignments] == ["a"]


def test_a_freed_device_beside_a_running_survivor_resizes_it_when_that_wins():
    t, plan, _ = first(["a", "b"], keep=0.5)
    # a plan in which a runs its last segment (promoted earlier) beside b's first segment
    data = plan.model_dump(mode="json")
    data["early_stop"]["segments"]["a"] = {"from": 25, "to": 100}
    plan = Plan.model_validate(data)
    ids = {x.job: x.gpu_ids for x in plan.assignments}
    assert ids["a"] != ids["b"]
    # a runs at 1 step/s on its device; b lost at its rung and left the other one
    records = {"a": rec(plan, "running", 30, 100, rate=1.0, devices=ids["a"]),
               "b": rec(plan, "stopped", 25, 25, devices=ids["b"])}
    v = seg.verdicts(seg.halving_of(plan), metrics({"a": {25: 0.2}, "b": {25: 0.8}}), records)
    ev = seg.rung_event(plan, records, v)
    assert ev and "resize" in ev["reason"] and ev["running"] == ["a"]
    res = seg.replan_segments(t, plan, [], records, v, reason=ev["reason"], solver="highs", time_limit=3,
                              restart_overhead_s=10, min_gain=0.05)
    assert res.option == "preempt-all" and res.plan.model_extra["preempted"] == ["a"]
    a = res.plan.assignment("a")
    assert (a.gpus, seg.section(res.plan)["segments"]["a"]) == (2, {"from": 30, "to": 100})
    # with a short way left, keeping it wins and no re-plan is asked for in the first place
    records["a"] = rec(plan, "running", 95, 100, rate=1.0, devices=ids["a"])
    assert seg.rung_event(plan, records, v, restart_overhead_s=10) is None


def test_nothing_left_when_losers_and_finished_jobs_are_all_there_is():
    t, plan, _ = first(["a", "b"], keep=0.5)
    records = {"a": rec(plan, "done", 100, 100), "b": rec(plan, "stopped", 25, 25, devices=(1,))}
    v = seg.verdicts(seg.halving_of(plan), metrics({"a": {25: 0.2, 100: 0.1}, "b": {25: 0.8}}), records)
    assert not seg.sweep_left(plan, v, records)
    assert seg.rung_event(plan, records, v) is None
    res = seg.replan_segments(t, plan, [], records, v, reason="rung", solver="highs", time_limit=3)
    assert res.plan is None


def test_a_running_job_whose_rung_value_just_came_in_is_kept_not_dropped():
    t, plan, _ = first(["a", "b", "c", "d"])
    dev = {a.job: a.gpu_ids for a in plan.assignments}
    waves = sorted(plan.assignments, key=lambda a: (a.start_s, a.job))
    early, late = [a.job for a in waves[:2]], [a.job for a in waves[2:]]
    records = {early[0]: rec(plan, "paused", 25, 25, devices=dev[early[0]]),
               early[1]: rec(plan, "paused", 25, 25, devices=dev[early[1]]),
               late[0]: rec(plan, "running", 25, 25, rate=1.0, devices=dev[late[0]]),  # evaluated, not yet paused
               late[1]: rec(plan, "paused", 25, 25, devices=dev[late[1]])}
    v = seg.verdicts(seg.halving_of(plan), metrics({early[0]: {25: 0.1}, early[1]: {25: 0.2},
                                                    late[1]: {25: 0.3}, late[0]: {25: 0.9}}), records)
    assert v[late[0]].action == "stop"
    assert seg.to_stop(v, records) == [late[1]]  # the running one is marked once it has paused
    res = seg.replan_segments(t, plan, [], records, v, reason="rung", solver="highs", time_limit=2,
                              restart_overhead_s=10)
    assert late[0] in res.plan.model_extra["kept"]
    assert late[0] not in seg.section(res.plan)["stopped"] and late[1] in seg.section(res.plan)["stopped"]


def test_a_promoted_job_trains_on_unless_idle_devices_would_pay_or_someone_waits():
    t, plan, _ = first(["a", "b"], keep=0.5)
    ids = {x.job: x.gpu_ids for x in plan.assignments}
    records = {"a": rec(plan, "running", 25, 25, rate=1.0, devices=ids["a"]), "b": rec(plan, "stopped", 25, 25, devices=ids["b"])}
    # b's device is idle and 75 steps on both devices beat one by far more than a restart
    assert not seg.trains_on(plan, "a", 25, records, restart_overhead_s=10)
    records["b"] = rec(plan, "running", 10, 25, rate=1.0, devices=ids["b"])  # busy: nothing to gain
    assert seg.trains_on(plan, "a", 25, records, restart_overhead_s=10)
    # a later job takes a's device in this plan: a pauses for it
    _, plan3, _ = first(["a", "b", "c"], keep=0.5)
    waited_on = {j for x in plan3.assignments for j in x.after}
    assert waited_on  # three first segments on two devices: some job takes over another's devices
    for j in waited_on:
        assert not seg.nothing_waits_for(plan3, j) and not seg.trains_on(plan3, j, 25, {}, restart_overhead_s=10)


def test_drift_does_not_read_a_pace_from_the_paused_record_of_a_job_whose_task_is_starting():
    _, plan, _ = first(["a", "b"])
    leased = {**rec(plan, "running", 25, 25, devices=()), "leased_only": True, "rate_steps_per_s": 0.01}
    view = seg.records_for_drift(plan, {"a": leased})
    assert view["a"]["updated_at"] is None and view["a"]["rate_steps_per_s"] is None
