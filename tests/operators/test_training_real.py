"""The training operator with the real job runner (torch on CPU): preempted by a newer plan, the job
checkpoints and the task skips; the newer plan's task resumes it from that checkpoint and finishes."""

import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from saturn_airflow.tasks import events as job_events
from saturn_airflow.spec.plan import Assignment, Plan, SolverInfo
from saturn_airflow.store.records import PlanStore, ProgressStore, Store

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

WORKLOAD = """
name: op-real
cluster: {nodes: [{name: local, gpus: 1, gpu_type: cpu}]}
parallelisms: [single]
jobs:
  - name: lm
    model: saturn_airflow.examples.models:gpt
    model_args: {size: tiny, vocab: 256, seq_len: 16}
    data: saturn_airflow.examples.data:tokens
    data_args: {seq_len: 16, vocab: 256, slow_after_step: 0, slow_step_s: 0.1}
    batch_size: 4
    steps: 120
"""


def plan(pid, wl_path, parent=None, **extra):
    a = Assignment(job="lm", parallelism="single", gpus=1, node="local", gpu_ids=[0], start_s=0, end_s=20)
    return Plan.model_validate({**Plan(plan_id=pid, workload="op-real", parent_plan_id=parent, created_at="t",
                                       makespan_s=20, lower_bound_s=20, solver=SolverInfo(name="x", status="heuristic"),
                                       assignments=[a]).model_dump(mode="json"), "workload_path": wl_path, **extra})


def ctx():
    class TI:
        try_number = 1

    return {"ti": TI(), "run_id": "manual__real"}


def test_preempt_then_resume_from_checkpoint(tmp_path, monkeypatch):
    from saturn_airflow.operators.training import SaturnTrainOperator

    monkeypatch.setenv("SATURN_HOME", str(tmp_path / "store"))
    store = Store(str(tmp_path / "store"))
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD)
    ps = PlanStore(store)
    v1 = ps.publish(plan("op-real-v1", str(wl)))
    prog = ProgressStore(store, sweep=v1.sweep)

    def preempt_midway():
        deadline = time.time() + 300
        while time.time() < deadline:
            rec = prog.get("op-real", "lm") or {}
            if rec.get("state") == "running" and (rec.get("step") or 0) >= 20:
                ps.publish(plan("op-real-v2", str(wl), parent="op-real-v1", kept=[], preempted=["lm"]))
                return
            time.sleep(0.5)

    th = threading.Thread(target=preempt_midway, daemon=True)
    th.start()
    with pytest.raises(AirflowSkipException, match="preempted by plan op-real-v2"):
        SaturnTrainOperator(task_id="lm", plan_id="op-real-v1", job="lm", watch_s=0.5).execute(ctx())
    th.join(5)
    stopped = prog.get("op-real", "lm")
    assert stopped["state"] == "preempted" and 0 < stopped["step"] < 120
    out = SaturnTrainOperator(task_id="lm", plan_id="op-real-v2", job="lm").execute(ctx())
    assert out["status"] == "done" and out["ran"]
    final = prog.get("op-real", "lm")
    assert final["state"] == "done" and final["plan_id"] == "op-real-v2"
    assert final.get("start_step", 0) >= stopped["step"] - 1  # resumed, not restarted from 0
    ends = [(e["plan_id"], e["status"]) for e in job_events.events(store, "op-real") if e["event"] == "end"]
    assert ends == [("op-real-v1", "preempted"), ("op-real-v2", "done")]
