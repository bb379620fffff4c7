"""Operators translate engine decisions into Airflow outcomes (return, skip, fail, defer).

Called directly with a minimal context (no scheduler); the real scheduler runs them in tests/e2e.
The job runner is replaced here by a stand-in that only writes progress records: these tests are
about the operator's decisions, the e2e test runs real training.
"""

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from saturn_airflow.execution import leases

from saturn_airflow.tasks import drift as drift_steps
from saturn_airflow.tasks import events as job_events
from saturn_airflow.tasks import planning as planning_steps
from saturn_airflow.tasks import pools
from saturn_airflow.tasks import training as training_steps
from saturn_airflow.spec.plan import Plan
from saturn_airflow.tasks.render import synthetic_plan
from saturn_airflow.store.records import PlanStore, ProgressStore, Store


class TI:
    def __init__(self, xcoms=None):
        self.xcoms = dict(xcoms or {})
        self.try_number = 1

    def xcom_pull(self, task_ids=None, key="return_value"):
        return self.xcoms.get(task_ids)

    def xcom_push(self, key, value):
        self.xcoms[key] = value


def ctx(xcoms=None, start=None):
    return {"ti": TI(xcoms), "run_id": "manual__test", "dag_run": SimpleNamespace(start_date=start)}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SATURN_HOME", str(tmp_path))
    return Store(str(tmp_path))


def publish(store, n=2, plan_id="w-v1", **extra):
    data = synthetic_plan(n, nodes=[("local", 2)], plan_id=plan_id, workload="w").model_dump(mode="json")
    data.update(extra)
    return PlanStore(store).publish(Plan.model_validate(data))


# ------------------------------------------------------------------ planning
def test_validate_fails_with_the_reason_for_a_job_that_fits_no_node(tmp_path, store):
    from saturn_airflow.operators.planning import SaturnValidateOperator

    wl = tmp_path / "bad.yaml"
    wl.write_text("""
name: bad
cluster: {nodes: [{name: small, gpus: 1}]}
jobs:
  - {name: ok, model: saturn_airflow.examples.models:gpt, data: saturn_airflow.examples.data:tokens, batch_size: 4, steps: 2}
  - {name: needs-two, model: saturn_airflow.examples.models:gpt, data: saturn_airflow.examples.data:tokens,
     batch_size: 4, steps: 2, parallelisms: [ddp]}
""")
    op = SaturnValidateOperator(task_id="validate", workload=str(wl))
    with pytest.raises(AirflowFailException, match="needs-two.*fits no node"):
        op.execute(ctx())


def test_validate_names_the_job_and_path_of_a_factory_that_does_not_import(tmp_path, store):
    from saturn_airflow.operators.planning import SaturnValidateOperator

    wl = tmp_path / "bad.yaml"
    wl.write_text("""
name: bad
cluster: {nodes: [{name: n0, gpus: 2}]}
jobs:
  - {name: ok, model: saturn_airflow.examples.models:gpt, data: saturn_airflow.examples.data:tokens, batch_size: 4, steps: 2}
  - {name: typo, model: saturn_airflow.examples.modles:gpt, data: saturn_airflow.examples.data:tokens, batch_size: 4, steps: 2}
""")
    with pytest.raises(AirflowFailException, match="job 'typo': cannot import the model factory "
                                                   "'saturn_airflow.examples.modles:gpt'"):
        SaturnValidateOperator(task_id="validate", workload=str(wl)).execute(ctx())


def test_validate_returns_nodes(tmp_path, store):
    from saturn_airflow.operators.planning import SaturnValidateOperator

    wl = tmp_path / "ok.yaml"
    wl.write_text("""
name: ok
cluster: {nodes: [{name: n0, gpus: 2}, {name: n1, gpus: 4, gpu_type: a100}]}
jobs: [{name: a, model: saturn_airflow.examples.models:gpt, data: saturn_airflow.examples.data:tokens, batch_size: 4, steps: 2}]
""")
    out = SaturnValidateOperator(task_id="validate", workload=str(wl)).execute(ctx())
    assert [n["name"] for n in out["nodes"]] == ["n0", "n1"] and out["replan_of"] is None
    assert pools.pool_specs(out["nodes"])[1] == {
        "name": "saturn_n1", "slots": 4, "description": "saturn: GPUs of node n1 (4 x a100)", "include_deferred": False}


def test_publish_is_idempotent_and_supersedes(store):
    from saturn_airflow.operators.planning import SaturnPublishOperator
    from saturn_airflow.spec.profile_table import parse_profile_table

    p = synthetic_plan(3, nodes=[("local", 2)], plan_id="w-v1", workload="w")
    table = parse_profile_table({"cluster": {"nodes": [{"name": "local", "gpus": 2}]},
                                 "jobs": [{"name": a.job, "configs": [{"parallelism": a.parallelism, "gpus": a.gpus,
                                                                       "runtime_s": a.runtime_s}]} for a in p.assignments]})
    planning_steps.stage(store, p, table)
    op = SaturnPublishOperator(task_id="publish")
    out = op.execute(ctx({"solve": "w-v1"}))
    assert out["dag_id"] == "saturn_run__w-v1"
    assert op.execute(ctx({"solve": "w-v1"}))["plan_id"] == "w-v1"  # a retry does not fail
    with pytest.raises(AirflowSkipException):
        op.execute(ctx({"solve": None}))


# ------------------------------------------------------------------ training
@pytest.fixture
def fake_runner(monkeypatch):
    calls = []

    def run_job(workload, job, *, parallelism, knobs, device_ids, store_url, plan_id, log, stop_event, **kw):
        calls.append((job, plan_id, tuple(device_ids)))
        prog = ProgressStore(Store(store_url), sweep=kw["sweep"])
        prog.put("w", job, {"plan_id": plan_id, "state": "running", "step": 0, "total": 10, "started_at": time.time()})
        if stop_event.wait(0.3):
            prog.put("w", job, {"plan_id": plan_id, "state": "preempted", "step": 3, "total": 10})
            return SimpleNamespace(status="preempted", message="stopped")
        log(f"{job}: step 10/10")
        prog.put("w", job, {"plan_id": plan_id, "state": "done", "step": 10, "total": 10, "finished_at": time.time()})
        return SimpleNamespace(status="done", message="done")

    import saturn_airflow.execution.launch

    monkeypatch.setattr(saturn_airflow.execution.launch, "run_job", run_job)
    return calls


def train(p, job, **kw):
    from saturn_airflow.operators.training import SaturnTrainOperator

    return SaturnTrainOperator(task_id=job, plan_id=p.plan_id, job=job, watch_s=0.05, **kw)


def test_trains_on_the_plan_devices_then_never_again(store, fake_runner):
    p = publish(store)
    a = p.assignments[0]
    out = train(p, a.job).execute(ctx())
    assert out["status"] == "done" and out["ran"]
    assert fake_runner == [(a.job, p.plan_id, tuple(a.gpu_ids))]
    again = train(p, a.job).execute(ctx())  # e.g. a retry, or the same job in a newer plan
    assert again == {"job": a.job, "status": "done", "ran": False} and len(fake_runner) == 1
    hist = leases.history(store)
    assert {e["key"] for e in hist} == {f"job/w/{p.sweep}/{a.job}"} | {f"device/local/{g}" for g in a.gpu_ids}
    assert [e["event"] for e in job_events.events(store, "w")] == ["start", "end"]


def test_a_retry_records_the_end_of_an_attempt_whose_task_was_killed_after_the_job_finished(store, fake_runner):
    """The task process is SIGKILLed, its ranks run on and write the job done: the retry trains nothing,
    and records the end the killed attempt could not, once (the events log: every job done exactly once)."""
    p = publish(store)
    a = p.assignments[0]
    job_events.record_event(store, "w", {"event": "start", "job": a.job, "plan_id": p.plan_id, "device_ids": a.gpu_ids},
                            sweep=p.sweep)
    ProgressStore(store, sweep=p.sweep).put("w", a.job, {"plan_id": p.plan_id, "state": "done", "step": 10, "total": 10})
    for _ in range(2):  # the retry, then e.g. the same job in a newer plan
        assert train(p, a.job).execute(ctx()) == {"job": a.job, "status": "done", "ran": False}
    assert fake_runner == []
    ev = job_events.events(store, "w", sweep=p.sweep)
    assert [(e["event"], e.get("status")) for e in ev] == [("start", None), ("end", "done")]
    assert ev[1]["started_at"] == ev[0]["t"] and ev[1]["plan_id"] == p.plan_id


def test_unstarted_task_of_a_superseded_plan_skips(store, fake_runner):
    p = publish(store)
    publish(store, n=2, plan_id="w-v2", parent_plan_id=p.plan_id, kept=[])
    with pytest.raises(AirflowSkipException, match="superseded"):
        train(p, p.assignments[1].job).execute(ctx())
    assert fake_runner == []


def test_running_job_is_preempted_when_a_newer_plan_does_not_keep_it(store, fake_runner, monkeypatch):
    p = publish(store)
    job = p.assignments[0].job

    def later():
        time.sleep(0.1)
        publish(store, n=2, plan_id="w-v2", parent_plan_id=p.plan_id, kept=[], preempted=[job])

    threading.Thread(target=later).start()
    with pytest.raises(AirflowSkipException, match="preempted by plan w-v2"):
        train(p, job).execute(ctx())


def test_kept_job_in_the_child_waits_for_the_parent_run_and_does_not_rerun(store, fake_runner):
    p = publish(store)
    job = p.assignments[0].job
    child = publish(store, n=2, plan_id="w-v2", parent_plan_id=p.plan_id, kept=[job])
    # the parent's task holds the job lease; the child's task waits for it, then sees "done"
    held = leases.acquire(store, [leases.job_key("w", job, sweep=p.sweep)], {"job": job, "plan_id": p.plan_id})
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", train(child, job).execute(ctx())))
    t.start()
    time.sleep(1.5)
    assert t.is_alive()  # waiting on the lease
    ProgressStore(store, sweep=p.sweep).put("w", job, {"plan_id": p.plan_id, "state": "done", "step": 10, "total": 10})
    held.release()
    t.join(30)
    assert box["out"]["ran"] is False and fake_runner == []


def test_a_new_sweep_trains_again_while_a_replan_never_reruns(store, fake_runner):
    """Two runs of the planning DAG for one workload are two sweeps; a re-plan stays in its parent's."""
    first = publish(store)
    job = first.assignments[0].job
    assert train(first, job).execute(ctx())["ran"]
    stored_first = PlanStore(store).get(first.plan_id)
    assert stored_first.sweep_id == first.plan_id  # a root plan starts its sweep
    replan = publish(store, n=2, plan_id="w-v1-re", parent_plan_id=first.plan_id, kept=[])
    assert replan.sweep == first.plan_id  # recorded at publish time
    again = train(replan, job).execute(ctx())
    assert again["ran"] is False and len(fake_runner) == 1  # same sweep: finished work is never redone
    second = publish(store, plan_id="w-v2")  # the planning DAG's next run: a new root
    out = train(second, job).execute(ctx())
    assert out["ran"] and [c[1] for c in fake_runner] == [first.plan_id, second.plan_id]
    assert ProgressStore(store, sweep=second.sweep).get("w", job)["plan_id"] == second.plan_id
    assert ProgressStore(store, sweep=first.sweep).get("w", job)["plan_id"] == first.plan_id  # untouched
    sweeps = [(e["sweep"], e["event"]) for e in job_events.events(store, "w")]
    assert sweeps == [(first.sweep, "start"), (first.sweep, "end"), (second.sweep, "start"), (second.sweep, "end")]
    assert [e["event"] for e in job_events.events(store, "w", sweep=second.sweep)] == ["start", "end"]
    keys = {e["key"] for e in leases.history(store) if e["key"].startswith("job/")}
    assert keys == {f"job/w/{first.sweep}/{job}", f"job/w/{second.sweep}/{job}"}


# ------------------------------------------------------------------ drift
def test_drift_sensor_defers_to_the_installed_trigger(store):
    from saturn_airflow.operators.drift import SaturnDriftSensor

    p = publish(store)
    sensor = SaturnDriftSensor(task_id="drift_watch", plan_id=p.plan_id)
    from datetime import datetime, timezone

    with pytest.raises(TaskDeferred) as e:
        sensor.execute(ctx(start=datetime.now(timezone.utc)))
    path, kwargs = e.value.trigger.serialize()
    assert path == "saturn_airflow.operators.triggers.DriftTrigger" and kwargs["plan_id"] == p.plan_id
    # the trigger fires "done" once every job is done
    for a in p.assignments:
        ProgressStore(store, sweep=p.sweep).put("w", a.job, {"plan_id": p.plan_id, "state": "done", "finished_at": time.time()})
    from saturn_airflow.operators.triggers import DriftTrigger

    trig = DriftTrigger(**kwargs)

    async def first():
        async for ev in trig.run():
            return ev

    ev = asyncio.run(asyncio.wait_for(first(), 30))
    assert ev.payload["kind"] == "done"
    assert sensor.execute_complete(ctx(), ev.payload)["kind"] == "done"


def test_trigger_fires_drift_for_a_late_plan(store):
    p = publish(store, n=2)
    a = sorted(p.assignments, key=lambda a: a.start_s)[0]
    t0 = time.time() - 10
    ProgressStore(store, sweep=p.sweep).put("w", a.job, {"plan_id": p.plan_id, "state": "running", "step": 1,
                                                         "total": 1000, "rate_steps_per_s": 0.1, "started_at": t0, "updated_at": t0 + 9})
    ev = drift_steps.drift_step(store.url, p.plan_id, t0)
    assert ev["kind"] == "drift" and "later than the planned" in ev["reason"]
    conf = drift_steps.replan_conf(ev)
    assert conf["replan_of"] == p.plan_id and a.job in conf["drift"]["running"]
    assert conf["drift"]["rates"] == {a.job: 0.1}
    import json

    json.dumps(conf)  # travels as a DAG run conf


def test_replan_trigger_skips_without_drift_and_triggers_with_it(store):
    from saturn_airflow.operators.drift import SaturnReplanTriggerOperator

    op = SaturnReplanTriggerOperator(task_id="trigger_replan", plan_id="w-v1")
    assert op.trigger_run_id == "replan__w-v1" and op.trigger_dag_id == "saturn_plan"
    with pytest.raises(AirflowSkipException):
        op.execute(ctx({"drift_watch": {"kind": "done", "message": "all done"}}))
    event = {"kind": "drift", "plan_id": "w-v1", "reason": "late", "report": {"running": ["a"]}}
    with pytest.raises(Exception) as e:  # Airflow 3: the task runner creates the run from this exception
        op.execute(ctx({"drift_watch": event}))
    assert type(e.value).__name__ == "DagRunTriggerException"
    assert op.conf["replan_of"] == "w-v1" and op.conf["reason"] == "late"


def test_last_failed_attempt_is_recorded_so_the_watch_can_end(store, fake_runner):
    p = publish(store)
    job = p.assignments[0].job
    held = leases.acquire(store, [leases.device_key("local", g) for g in p.assignments[0].gpu_ids], {"job": "other"})
    op = train(p, job, retries=0)
    import os

    os.environ["AIRFLOW__SATURN__LEASE_TIMEOUT_S"] = "0.5"
    try:
        with pytest.raises(leases.LeaseTimeout):
            op.execute(ctx())
    finally:
        del os.environ["AIRFLOW__SATURN__LEASE_TIMEOUT_S"]
        held.release()
    rec = ProgressStore(store, sweep=p.sweep).get("w", job)
    assert rec["state"] == "failed" and "LeaseTimeout" in rec["error"]
    ev = drift_steps.drift_step(store.url, p.plan_id, time.time())
    assert ev is None or ev["kind"] != "drift"


# ------------------------------------------------------------------ the plan's verdict
def test_plan_result_fails_the_run_naming_the_job_and_reason_until_it_is_done(store):
    from saturn_airflow.operators.training import SaturnPlanResultOperator

    p = publish(store, n=3)
    a, b, c = (x.job for x in p.assignments)
    prog = ProgressStore(store, sweep=p.sweep)
    prog.put("w", a, {"plan_id": p.plan_id, "state": "done", "step": 10, "total": 10})
    prog.put("w", b, {"plan_id": p.plan_id, "state": "interrupted", "step": 4, "total": 10,
                      "error": "RuntimeError: injected failure at step 4"})
    training_steps.mark_failed(store, p, b, "AirflowException: job failed")  # the task's last attempt
    assert prog.get("w", b)["state"] == "failed"
    assert prog.get("w", b)["error"] == "RuntimeError: injected failure at step 4"  # the runner's own reason kept
    prog.put("w", c, {"plan_id": p.plan_id, "state": "done", "step": 10, "total": 10})
    op = SaturnPlanResultOperator(task_id="plan_result", plan_id=p.plan_id)
    with pytest.raises(AirflowFailException, match=f"{b}: failed at step 4/10: RuntimeError: injected failure"):
        op.execute(ctx())
    prog.put("w", b, {"plan_id": p.plan_id, "state": "done", "step": 10, "total": 10})  # cleared, resumed, done
    assert op.execute(ctx()) == {"done": sorted([a, b, c])}


def test_plan_result_leaves_jobs_moved_to_a_newer_plan_to_it(store):
    from saturn_airflow.operators.training import SaturnPlanResultOperator

    p = publish(store, n=2)
    moved = p.assignments[1].job
    ProgressStore(store, sweep=p.sweep).put("w", p.assignments[0].job, {"plan_id": p.plan_id, "state": "done"})
    ProgressStore(store, sweep=p.sweep).put("w", moved, {"plan_id": p.plan_id, "state": "preempted", "step": 3,
                                                         "total": 10})
    data = synthetic_plan(1, nodes=[("local", 2)], plan_id="w-v2", workload="w").model_dump(mode="json")
    data["assignments"][0]["job"] = moved
    data.update(parent_plan_id=p.plan_id, kept=[], preempted=[moved])
    PlanStore(store).publish(Plan.model_validate(data))
    assert SaturnPlanResultOperator(task_id="plan_result", plan_id=p.plan_id).execute(ctx())["done"]


def test_plan_result_counts_stopped_jobs_and_jobs_paused_at_their_rung_as_finished(store):
    from saturn_airflow.operators.training import SaturnPlanResultOperator

    p0 = synthetic_plan(3, nodes=[("local", 2)], plan_id="w-v1", workload="w")
    a, b, c = (x.job for x in p0.assignments)
    halving = {"metric": "loss", "goal": "min", "keep": 0.5, "rungs": [5], "groups": {"g": [a, b, c]},
               "steps": {a: 10, b: 10, c: 10}, "segments": {j: {"from": 0, "to": 5} for j in (a, b, c)}}
    p = publish(store, n=3, early_stop=halving)
    prog = ProgressStore(store, sweep=p.sweep)
    prog.put("w", a, {"plan_id": p.plan_id, "state": "paused", "step": 5, "total": 5})  # at its rung: the sweep decides
    prog.put("w", b, {"plan_id": p.plan_id, "state": "stopped", "step": 5, "total": 10})  # lost at the rung
    prog.put("w", c, {"plan_id": p.plan_id, "state": "paused", "step": 3, "total": 5})  # short of its segment's end
    op = SaturnPlanResultOperator(task_id="plan_result", plan_id=p.plan_id)
    with pytest.raises(AirflowFailException, match=f"1 of 3 jobs did not finish: {c}: paused at step 3/5"):
        op.execute(ctx())
    prog.put("w", c, {"plan_id": p.plan_id, "state": "paused", "step": 5, "total": 5})
    assert op.execute(ctx()) == {"done": sorted([a, b, c])}


def test_a_stop_no_plan_asked_for_fails_the_attempt_so_a_retry_resumes(store, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    import saturn_airflow.execution.launch

    monkeypatch.setattr(saturn_airflow.execution.launch, "run_job",
                        lambda *a, **k: SimpleNamespace(status="preempted", step=5, message="preempted (SIGTERM)"))
    p = publish(store)
    with pytest.raises(AirflowException, match="stopped from outside at step 5") as e:
        train(p, p.assignments[0].job).execute(ctx())
    assert not isinstance(e.value, AirflowSkipException)


def test_a_node_worker_runs_its_node_jobs_on_its_own_devices(store, fake_runner, monkeypatch):
    """[saturn] node/device_ids: plan devices 0..k-1 of the node map onto the worker's device ids in order,
    and the lease records name the worker's node."""
    from saturn_airflow.execution.devices import available_devices

    have = available_devices("cpu")
    monkeypatch.setenv("AIRFLOW__SATURN__NODE", "local")
    monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", ",".join(str(i) for i in reversed(have[:2])))
    monkeypatch.setenv("SATURN_DEVICE_KIND", "cpu")
    p = publish(store)
    a = next(a for a in p.assignments if a.gpu_ids)
    assert train(p, a.job).execute(ctx())["status"] == "done"
    mine = list(reversed(have[:2]))
    assert fake_runner == [(a.job, p.plan_id, tuple(mine[g] for g in a.gpu_ids))]
    acquired = [e for e in leases.history(store) if e["event"] == "acquire"]
    assert {e["worker_node"] for e in acquired} == {"local"} and {e["node"] for e in acquired} == {"local"}


def test_a_task_on_the_worker_of_another_node_fails_at_once(store, fake_runner, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SATURN__NODE", "other-node")
    p = publish(store)
    a = p.assignments[0]
    with pytest.raises(AirflowFailException, match="planned on node 'local' but ran on the worker of node 'other-node'"):
        train(p, a.job).execute(ctx())
    assert fake_runner == [] and leases.history(store) == []
    assert ProgressStore(store, sweep=p.sweep).get("w", a.job)["state"] == "failed"  # the drift watch does not wait for it


def test_validate_rejects_a_workload_node_without_a_worker(tmp_path, store, monkeypatch):
    from saturn_airflow.operators.planning import SaturnValidateOperator

    monkeypatch.setenv("AIRFLOW__SATURN__NODES", "node0,node1")
    path = tmp_path / "w.yaml"
    path.write_text("name: w\ncluster: {nodes: [{name: node0, gpus: 1}, {name: gpu-x, gpus: 1}]}\n"
                    "jobs: [{name: j, model: saturn_airflow.examples.models:gpt, data: saturn_airflow.examples.data:tokens, "
                    "batch_size: 4, steps: 5}]\n")
    with pytest.raises(AirflowFailException, match="gpu-x have no worker"):
        SaturnValidateOperator(task_id="validate", workload=str(path)).execute(ctx())


def test_trigger_logs_why_it_does_not_replan_when_that_changes(store):
    from saturn_airflow.operators.triggers import DriftTrigger

    p = publish(store, n=2)
    prog = ProgressStore(store, sweep=p.sweep)
    now = time.time()
    for a in p.assignments:  # launched, no steady rate yet
        prog.put("w", a.job, {"plan_id": p.plan_id, "state": "running", "step": 1, "total": 1000, "started_at": now,
                              "first_step_at": now, "updated_at": now, "trail": [[now, 1]]})
    trig = DriftTrigger(p.plan_id, store.url, now, poll_s=0.05)
    lines: list[str] = []

    class Log:
        def info(self, msg, *args):
            lines.append(msg % args)

        warning = info

    trig._log = Log()

    async def watch():
        agen = trig.run()
        task = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.5)
        for a in p.assignments:
            prog.put("w", a.job, {"plan_id": p.plan_id, "state": "done", "finished_at": time.time()})
        return await asyncio.wait_for(task, 30)

    ev = asyncio.run(watch())
    assert ev.payload["kind"] == "done"
    looks = [s for s in lines if " look " in s]
    # the verdict is logged on the first look, then only when it changes (or every 12 looks)
    assert looks and "look 1: no job has reported a steady rate" in looks[0], lines
    assert len(looks) <= 2, lines
