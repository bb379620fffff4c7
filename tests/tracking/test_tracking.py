"""MLflow tracking is off unless configured, and a tracking server that is away never stops training
(the real-server behaviour is tests/e2e/test_mlflow_e2e.py)."""

from __future__ import annotations

import socket

import pytest

from saturn_airflow.store.files import Store
from saturn_airflow.store.metrics import MetricsStore
from saturn_airflow.tracking import tracker_for


def _job():
    from saturn_airflow.spec.workload import parse_workload

    return parse_workload({"name": "tw", "evaluation": {"metrics": ["loss"]}, "jobs": [{
        "name": "j", "model": "saturn_airflow.examples.models:gpt", "data": "saturn_airflow.examples.data:tokens",
        "batch_size": 4, "steps": 4}]}).jobs[0]


def test_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__SATURN__MLFLOW_TRACKING_URI", raising=False)
    assert tracker_for(Store(str(tmp_path)), "tw", "tw-root", "p1") is None


def test_an_unreachable_tracking_server_never_stops_the_job(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from saturn_airflow.execution.recorder import JobRecorder

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW__SATURN__MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    lines = []
    rec = JobRecorder(store_url=str(tmp_path), workload="tw", sweep="tw-root", job=_job(), plan_id="p1", parallelism="single",
                      device_ids=[0], world_size=1, log=lines.append)
    assert rec.tracker is not None
    rec.start(0)
    rec.evaluated(2, {"loss": 1.5}, 0.01)
    rec.evaluated(4, {"loss": 1.2}, 0.01)
    rec.finish("done", 4)
    rec.ended("done", None)
    got = MetricsStore(Store(str(tmp_path)), sweep="tw-root").get("tw", "j")
    assert [p["step"] for p in got["points"]] == [2, 4] and got["attempts"][-1]["status"] == "done"
    failures = [line for line in lines if "MLflow failed" in line]
    assert len(failures) == 2, lines  # at the start, then once more at the end; skipped in between
