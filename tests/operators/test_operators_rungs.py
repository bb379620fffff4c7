"""Operators under successive halving: a training task runs its job to the end of its segment with the
rung gate and succeeds when it pauses there; a stopped job's task never runs it again, nor one that
already reached the end of this plan's segment; the drift watch's look asks for a rung re-plan and
the trigger task starts it. The job runner is a stand-in writing progress records (real training:
tests/execution/test_runner_rungs.py and tests/e2e/test_early_stop_e2e.py)."""

import time
from types import SimpleNamespace

import pytest

from saturn_airflow.spec.plan import Plan
from saturn_airflow.store.files import PlanStore, ProgressStore, Store
from saturn_airflow.store.metrics import MetricsStore
from saturn_airflow.tasks import drift as drift_steps
from saturn_airflow.tasks.render import synthetic_plan


class TI:
    try_number = 1

    def __init__(self, xcoms=None):
        self.xcoms = dict(xcoms or {})

    def xcom_pull(self, task_ids=None, key="return_value"):
        return self.xcoms.get(task_ids)


def ctx(xcoms=None):
    return {"ti": TI(xcoms), "run_id": "manual__test", "dag_run": SimpleNamespace(start_date=None)}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SATURN_HOME", str(tmp_path))
    return Store(str(tmp_path))


def segmented(store, jobs=("a", "b"), rung=25, steps=100):
    """Two jobs on two devices, each planned up to its rung."""
    data = synthetic_plan(len(jobs), nodes=[("local", 2)], plan_id="w-v1", workload="w").model_dump(mode="json")
    for a, name in zip(data["assignments"], jobs):
        a["job"], a["gpus"], a["gpu_ids"], a["start_s"], a["after"] = name, 1, [jobs.index(name)], 0.0, []
    data["early_stop"] = {"metric": "loss", "goal": "min", "keep": 0.5, "rungs": [rung], "groups": {"g": list(jobs)},
                          "steps": {j: steps for j in jobs}, "nodes": {"local": 2}, "table_ref": None,
                          "segments": {j: {"from": 0, "to": rung} for j in jobs}, "stopped": {}, "waiting": []}
    p = Plan.model_validate(data)
    PlanStore(store).publish(p)
    return p


@pytest.fixture
def fake_runner(monkeypatch):
    calls = []

    def run_job(workload, job, *, store_url, plan_id, stop_event, steps=None, rung_gate=None, **kw):
        calls.append({"job": job, "steps": steps, "rung_gate": rung_gate})
        ProgressStore(Store(store_url), sweep=kw["sweep"]).put("w", job, {"plan_id": plan_id, "state": "paused", "step": steps,
                                                        "total": steps, "finished_at": time.time()})
        return SimpleNamespace(status="paused", message="paused at a rung")

    import saturn_airflow.execution.launch

    monkeypatch.setattr(saturn_airflow.execution.launch, "run_job", run_job)
    return calls


def train(p, job):
    from saturn_airflow.operators.training import SaturnTrainOperator

    return SaturnTrainOperator(task_id=job, plan_id=p.plan_id, job=job, watch_s=0.05)


def test_a_task_trains_to_its_segment_end_with_the_gate_and_succeeds_paused(store, fake_runner):
    p = segmented(store)
    out = train(p, "a").execute(ctx())
    assert out["status"] == "paused" and out["ran"]
    assert fake_runner == [{"job": "a", "steps": 25, "rung_gate": "halving"}]
    again = train(p, "a").execute(ctx())  # a retry: it already reached this plan's segment end
    assert again["ran"] is False and len(fake_runner) == 1


def test_a_stopped_job_is_never_run_again(store, fake_runner):
    p = segmented(store)
    ProgressStore(store, sweep=p.sweep).put("w", "b", {"plan_id": p.plan_id, "state": "stopped", "step": 25, "total": 25})
    out = train(p, "b").execute(ctx())
    assert out == {"job": "b", "status": "done", "ran": False} and fake_runner == []


def test_the_watch_stops_the_loser_and_asks_for_a_rung_replan_the_trigger_starts(store):
    from saturn_airflow.operators.drift import SaturnReplanTriggerOperator

    p = segmented(store)
    prog, metrics = ProgressStore(store, sweep=p.sweep), MetricsStore(store, sweep=p.sweep)
    for job, loss, dev in (("a", 0.2, 0), ("b", 0.9, 1)):
        prog.put("w", job, {"plan_id": p.plan_id, "state": "paused", "step": 25, "total": 25, "device_ids": [dev],
                            "started_at": time.time() - 9, "finished_at": time.time()})
        metrics.add_point("w", job, 25, {"loss": loss}, plan_id=p.plan_id)
    event = drift_steps.drift_step(store.url, p.plan_id, time.time() - 10)
    assert event["kind"] == "rung" and event["promoted"] == ["a"], event
    assert prog.get("w", "b")["state"] == "stopped" and prog.get("w", "b")["stopped"]["rank"] == 2
    op = SaturnReplanTriggerOperator(task_id="trigger_replan", plan_id=p.plan_id)
    with pytest.raises(Exception) as e:
        op.execute(ctx({"drift_watch": event}))
    assert type(e.value).__name__ == "DagRunTriggerException"
    assert op.conf["replan_of"] == p.plan_id and op.conf["drift"]["kind"] == "rung"
