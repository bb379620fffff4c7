"""The runner at rungs, on real torch: a launch that ends at a rung pauses there (held-out point and
checkpoint at that step, record "paused"), and the in-process gate stops a loser or trains a promoted
job on past its rung without a relaunch. Jobs b and d never run: their rung values are written into
the store as if they had reached the rung first."""

from __future__ import annotations

import pytest

from saturn_airflow.execution.checkpoint import read_latest
from saturn_airflow.execution.launch import run_job
from saturn_airflow.spec.workload import parse_workload
from saturn_airflow.store.files import BY_HAND, ProgressStore, Store
from saturn_airflow.store.metrics import MetricsStore

pytestmark = pytest.mark.distributed


def workload():
    job = {"model": "saturn_airflow.examples.models:gpt", "model_args": {"size": "tiny", "vocab": 256, "seq_len": 32},
           "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 256},
           "batch_size": 8, "steps": 6, "optimizer": {"name": "adamw", "lr": 1e-3}}
    return parse_workload({
        "name": "rungs", "jobs": [{"name": n, **job} for n in "abcd"],
        "evaluation": {"data_args": {"stream": 1}, "batches": 1, "metrics": ["loss"]},
        "early_stop": {"rungs": [3], "keep": 0.5, "group": {"one": ["a", "b"], "two": ["c", "d"]}}})


def run(store, job, **kw):
    return run_job(workload(), job, parallelism="single", knobs={}, device_ids=[0], store_url=store.url,
                   plan_id="p", log=lambda line: None, timeout_s=240, **kw)


def test_a_launch_to_its_rung_pauses_there_then_resumes_to_the_end(tmp_path):
    store = Store(str(tmp_path))
    res = run(store, "a", steps=3)
    assert (res.status, res.step) == ("paused", 3), res.message
    rec = ProgressStore(store, sweep=BY_HAND).get("rungs", "a")
    assert (rec["state"], rec["step"], rec["total"], rec["job_steps"]) == ("paused", 3, 3, 6)
    assert read_latest(res.checkpoint_dir)["step"] == 3
    assert [p["step"] for p in MetricsStore(store, sweep=BY_HAND).get("rungs", "a")["points"]] == [3]
    res = run(store, "a")
    assert (res.status, res.step) == ("done", 6), res.message
    assert [p["step"] for p in MetricsStore(store, sweep=BY_HAND).get("rungs", "a")["points"]] == [3, 6]


def test_the_gate_stops_a_loser_and_trains_a_promoted_job_on(tmp_path):
    store = Store(str(tmp_path))
    metrics = MetricsStore(store, sweep=BY_HAND)
    metrics.add_point("rungs", "b", 3, {"loss": 0.0})  # b reached rung 3 first, unbeatable
    metrics.add_point("rungs", "d", 3, {"loss": 99.0})  # d reached it first too, hopeless
    lost = run(store, "a", steps=3, rung_gate="halving")
    assert (lost.status, lost.step) == ("stopped", 3), lost.message
    assert ProgressStore(store, sweep=BY_HAND).get("rungs", "a")["state"] == "stopped"
    won = run(store, "c", steps=3, rung_gate="halving")  # promoted at 3, nobody waits: no pause, no relaunch
    assert (won.status, won.step) == ("done", 6), won.message
    assert [p["step"] for p in metrics.get("rungs", "c")["points"]] == [3, 6]
