"""MLflow tracking against a real MLflow tracking server (SQLite backend, local artifact folder), started
and stopped by PID: one parent run per sweep, one child run per job with its params and per-evaluation
metrics, the exported model as an artifact; a preempted job resumed under a re-plan (another plan id,
another parallelism) continues its run, never opens a second one. Real torchrun training on gloo.
About 2-3 minutes on 2 cores (the server takes 10-30 s to start).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

pytestmark = pytest.mark.e2e
PORTS = range(18300, 18400)  # this suite's range on shared machines


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


@pytest.fixture(scope="module")
def mlflow_server():
    pytest.importorskip("mlflow.server", reason="the MLflow server (pip install mlflow) runs this test")
    home = Path(tempfile.mkdtemp(prefix="i12-mlflow-e2e-"))
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
           "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    try:
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() - t0 < 180, "the MLflow server did not come up in 180 s"
            time.sleep(0.5)
        print(f"MLflow server up in {time.time() - t0:.1f} s at {url}")
        yield url, home
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _workload():
    from saturn_airflow.spec.workload import parse_workload

    return parse_workload({
        "name": "mlf-sweep",
        "evaluation": {"batches": 2, "every_steps": 2, "metrics": ["loss", "accuracy"], "data_args": {"stream": 1}},
        "jobs": [{"name": "lm", "model": "saturn_airflow.examples.models:gpt",
                  "model_args": {"size": "tiny", "vocab": 128, "seq_len": 16},
                  "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 16, "vocab": 128},
                  "batch_size": 8, "steps": 6}],
        "grid": {"optimizer.lr": [3e-3, 1e-2]}})


def _plans(wl):
    """A root plan with both jobs and a re-plan of the one still running (as the drift re-plan publishes)."""
    from saturn_airflow.planner import plan_table
    from saturn_airflow.spec.plan import new_plan_id
    from saturn_airflow.spec.profile_table import parse_profile_table

    table = parse_profile_table({"cluster": {"nodes": [{"name": "node0", "gpus": 2}]}, "jobs": [
        {"name": j.name, "configs": [{"parallelism": "ddp", "gpus": 2, "runtime_s": 20.0},
                                     {"parallelism": "single", "gpus": 1, "runtime_s": 30.0}]} for j in wl.jobs]})
    root = plan_table(table, baseline="current-practice", workload=wl.name)
    rest = parse_profile_table({"cluster": {"nodes": [{"name": "node0", "gpus": 2}]}, "jobs": [
        {"name": wl.jobs[0].name, "configs": [{"parallelism": "fsdp", "gpus": 2, "runtime_s": 10.0}]}]})
    child = plan_table(rest, baseline="current-practice", workload=wl.name)
    child = child.model_copy(update={"plan_id": new_plan_id(wl.name), "parent_plan_id": root.plan_id})
    return root, child


def test_sweep_parent_run_child_runs_continue_across_replan_and_resume(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    from saturn_airflow.execution.launch import run_job
    from saturn_airflow.store.files import PlanStore, Store
    from saturn_airflow.store.metrics import MetricsStore
    from saturn_airflow.views.leaderboard import leaderboard

    url, _ = mlflow_server
    monkeypatch.setenv("AIRFLOW__SATURN__MLFLOW_TRACKING_URI", url)
    wl = _workload()
    a, b = (j.name for j in wl.jobs)
    store = Store(str(tmp_path / "store"))
    ps = PlanStore(store)
    root, child = _plans(wl)
    root = ps.publish(root)
    kw = dict(store_url=store.url, sweep=root.sweep, log=lambda line: print(line) if "MLflow" in line else None, timeout_s=300)
    t0 = time.time()
    # job a: ddp x2 under the root plan, stopped at step 3 (as if preempted by the re-plan)
    r1 = run_job(wl, a, parallelism="ddp", knobs={}, device_ids=[0, 1], plan_id=root.plan_id, stop_at_step=3, **kw)
    assert r1.status == "preempted", r1.message
    # job b: single, start to end, under the root plan
    r2 = run_job(wl, b, parallelism="single", knobs={}, device_ids=[0], plan_id=root.plan_id, **kw)
    assert r2.status == "done", r2.message
    # the re-plan: a resumes under fsdp x2 with another plan id
    child = ps.publish(child)
    assert child.sweep == root.sweep
    r3 = run_job(wl, a, parallelism="fsdp", knobs={}, device_ids=[0, 1], plan_id=child.plan_id, **kw)
    assert r3.status == "done", r3.message
    print(f"three launches took {time.time() - t0:.1f} s")

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(wl.name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("saturn.kind") == "sweep"]
    children = {r.data.tags["saturn.job"]: r for r in runs if r.data.tags.get("saturn.kind") == "job"}
    assert len(runs) == 3 and len(parents) == 1 and set(children) == {a, b}, [r.data.tags for r in runs]
    parent = parents[0]
    assert parent.data.tags["saturn.sweep"] == root.plan_id and parent.info.status == "FINISHED"
    for r in children.values():
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"

    ra = children[a]
    # params: hyper-parameters and the first placement; tags: where it runs now
    assert ra.data.params["optimizer.lr"] == str(wl.job(a).optimizer.lr)
    assert (ra.data.params["parallelism"], ra.data.params["gpus"], ra.data.params["plan_id"]) == ("ddp", "2", root.plan_id)
    assert (ra.data.tags["saturn.parallelism"], ra.data.tags["saturn.plan_id"], ra.data.tags["saturn.attempts"]) == \
        ("fsdp", child.plan_id, "2")
    # one metric per evaluation step, across the resume, equal to the store's record
    rec = MetricsStore(store, sweep=root.sweep).get(wl.name, a)
    for name in ("loss", "accuracy"):
        hist = client.get_metric_history(ra.info.run_id, name)
        assert [m.step for m in hist] == [2, 4, 6], (name, [(m.step, m.value) for m in hist])
        assert [m.value for m in hist] == pytest.approx([p["values"][name] for p in rec["points"]])
    assert [m.step for m in client.get_metric_history(ra.info.run_id, "train_loss")] == [2, 4, 6]

    # the exported model is each run's artifact, and loads with plain torch
    board = leaderboard(store, wl.name, root.sweep, [a, b])
    assert parent.data.tags["saturn.winner"] == board.winner.job
    assert children[board.winner.job].data.tags.get("saturn.winner") == "true"
    for job, run in children.items():
        names = sorted(f.path for f in client.list_artifacts(run.info.run_id, "model"))
        assert names == ["model/model.json", "model/model.safetensors"], names
        local = client.download_artifacts(run.info.run_id, "model/model.safetensors", str(tmp_path / job))
        got, want = load_file(local), load_file(board.rows[[r.job for r in board.rows].index(job)].export_path)
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
        meta = json.loads(Path(client.download_artifacts(run.info.run_id, "model/model.json", str(tmp_path / job)))
                          .read_text())
        assert meta["job"] == job and meta["step"] == 6


def test_concurrent_jobs_create_one_parent_run(mlflow_server, tmp_path):
    """Jobs of one sweep starting at once race to create the sweep's run: exactly one survives."""
    from mlflow.tracking import MlflowClient

    from saturn_airflow.store.files import Store
    from saturn_airflow.tracking.mlflow_runs import MlflowTracker

    url, _ = mlflow_server
    store = Store(str(tmp_path / "store"))
    ids, errors = [], []
    gate = threading.Barrier(4)

    def start():
        try:
            tracker = MlflowTracker(url, store, "race-sweep", "race-root", experiment="race-sweep")
            tracker.experiment_id()
            gate.wait(timeout=60)
            ids.append(tracker.parent_run_id())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(ids) == 4 and len(set(ids)) == 1, (ids, errors)
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("race-sweep")
    active = client.search_runs([exp.experiment_id], filter_string="tags.`saturn.sweep` = 'race-root'")
    assert [r.info.run_id for r in active] == ids[:1]
