"""Successive halving end to end against a real Airflow (scheduler, dag-processor, triggerer,
api-server; LocalExecutor), real profiling and torch training on this machine's 2 CPU devices.

Three jobs differ only in learning rate (1e-5 barely learns, 0.3 is too large, 3e-3 is right); one
rung at step 20 keeps one of three. The first plan runs every job to step 20. The losers stop at
their checkpoint there (state "stopped": never resumed, never failed), and the freed devices make the
drift watch ask for a rung re-plan, which resumes the winner from its step-20 checkpoint on both
devices under another parallelism (ddp x2 after single x1) and trains it to the end. The plan page
shows the stopped jobs, the rung lines and the winner.

Whether two devices pay for the rest depends on the profile; on a machine shared with other work
two ranks on two busy cores can run slower than one. So the test profiles for real, then sets the
cached trials' step and start-up times to those of a quiet 2-core box (ddp x2 1.9x single, as
measured in docs/benchmarks-torch.md): the planning DAG's profile step (strategy full: every config,
not only those the guided profiler finds worth a trial) then finds them cached.
Everything after that (training, evaluations, checkpoints, stops, re-plans, resumes) is real.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_harness import AirflowHarness  # noqa: E402

from saturn_airflow.control import segments  # noqa: E402
from saturn_airflow.execution import leases  # noqa: E402
from saturn_airflow.store.files import PlanStore, ProgressStore, Store  # noqa: E402
from saturn_airflow.store.metrics import MetricsStore  # noqa: E402
from saturn_airflow.tasks import events as job_events  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

NAME = "e2e-halving"
WINNER = "gpt-lr0.003"


def workload() -> dict:
    return {
        "name": NAME,
        "cluster": {"nodes": [{"name": "local", "gpus": 2, "gpu_type": "cpu"}]},
        "parallelisms": ["single", "ddp"],
        "jobs": [{"name": "gpt", "model": "saturn_airflow.examples.models:gpt",
                  "model_args": {"d_model": 128, "n_layers": 2, "n_heads": 4, "vocab": 512, "seq_len": 32},
                  "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 512},
                  "batch_size": 32, "steps": 100, "optimizer": {"name": "adamw", "lr": 1e-3}}],
        "grid": {"optimizer.lr": [1e-5, 3e-3, 0.3]},
        "evaluation": {"data_args": {"stream": 1}, "batches": 2, "metrics": ["loss"]},
        "early_stop": {"metric": "loss", "rungs": [20], "keep": 0.3},
    }


@pytest.fixture(scope="module")
def af():
    port = int(os.environ["SATURN_E2E_PORT"]) if os.environ.get("SATURN_E2E_PORT") else None
    h = AirflowHarness(parallelism=4, port=port, keep_home=bool(os.environ.get("SATURN_E2E_KEEP_HOME")),
                       env={"AIRFLOW__SATURN__DRIFT_POLL_S": "2", "AIRFLOW__SATURN__RESTART_OVERHEAD_S": "0",
                            "AIRFLOW__SATURN__PROFILE_STRATEGY": "full"})  # every seeded config in the table
    t = time.time()
    h.start()
    print(f"\nAirflow up in {time.time() - t:.0f} s at {h.url} (home {h.home})")
    yield h
    pids = list(h.pids().values())
    h.stop()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


QUIET = {1: (0.30, 8.0), 2: (0.16, 9.0)}  # devices -> (seconds per step, start-up seconds) on a quiet box


def seed_quiet_profile(store: Store, wl_path: str) -> None:
    from saturn_airflow.profiling.profiler import profile_workload
    from saturn_airflow.spec.workload import load_workload

    profile_workload(load_workload(wl_path), store=store, devices=[0, 1], strategy="full")
    for name in store.list("profiles"):
        rec = store.read_json(f"profiles/{name}.json")
        step_s, startup_s = QUIET[int(rec["key"]["devices"])]
        rec["result"].update(step_s=step_s, startup_s=startup_s, teardown_s=1.0)
        store.write_json(f"profiles/{name}.json", rec)


def lineage(af):
    ps = PlanStore(Store(af.saturn_home))
    plans = sorted((p for p in ps.plans() if p.workload == NAME), key=lambda p: len(ps.lineage(p.plan_id)))
    return plans


def wait_sweep(af, sweep: str, timeout_s: float) -> dict:
    """Until every job is done or stopped (following the re-plans), or the time runs out."""
    prog = ProgressStore(Store(af.saturn_home), sweep=sweep)
    deadline = time.time() + timeout_s
    recs = {}
    while time.time() < deadline:
        recs = prog.all(NAME)
        if len(recs) == 3 and all(r.get("state") in ("done", "stopped") for r in recs.values()):
            return recs
        bad = [j for j, r in recs.items() if r.get("state") == "failed"]
        assert not bad, f"failed: {bad}: {[recs[j].get('error') for j in bad]}"
        time.sleep(3)
    raise TimeoutError(f"sweep not finished after {timeout_s:.0f} s: {recs}")


def test_losers_stop_at_the_rung_and_the_winner_resumes_on_both_devices(af, tmp_path):
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(workload(), sort_keys=False))
    seed_quiet_profile(Store(af.saturn_home), str(path))
    af.wait_dag("saturn_plan", timeout_s=180)
    t0 = time.time()
    run_id = af.trigger("saturn_plan", {"workload": str(path), "time_limit": 5, "drift_min_s": 3600,
                                        "drift_threshold": 1000})  # only rung re-plans here
    assert af.wait_run("saturn_plan", run_id, timeout_s=900) == "success"
    planned_at = time.time()
    recs = wait_sweep(af, lineage(af)[0].sweep, 1200)
    swept_at = time.time()
    store = Store(af.saturn_home)
    plans = lineage(af)
    first, last = plans[0], plans[-1]

    # the first plan: every job up to its rung, on one device each
    assert {j: s["to"] for j, s in segments.section(first)["segments"].items()} == {j: 20 for j in recs}
    # one survivor (keep 0.3 of 3), the two others stopped at the rung, nothing failed or lost
    assert sorted(j for j, r in recs.items() if r["state"] == "done") == [WINNER]
    for j, r in recs.items():
        if j != WINNER:
            assert r["state"] == "stopped" and r["step"] == 20, r
    ev = job_events.events(store, NAME, sweep=first.sweep)
    for j in recs:  # a stopped job is never started again after its stop
        ends = [e for e in ev if e["job"] == j and e["event"] == "end"]
        assert all(e["status"] in ("done", "paused", "stopped", "preempted") for e in ends), ends
        if j != WINNER:
            starts = [e for e in ev if e["job"] == j and e["event"] == "start"]
            assert len(starts) == 1, starts
    # the winner resumed from its rung checkpoint on both devices under another parallelism
    attempts = MetricsStore(store, sweep=first.sweep).get(NAME, WINNER)["attempts"]
    assert attempts[0]["parallelism"] == "single" and len(attempts[0]["device_ids"]) == 1, attempts
    assert attempts[-1]["start_step"] == 20 and len(attempts[-1]["device_ids"]) == 2, attempts
    assert attempts[-1]["parallelism"] == "ddp", attempts
    rung_replans = [p for p in plans if segments.is_rung_replan(p)]
    assert rung_replans, [p.model_extra.get("reason") for p in plans]
    assert any(WINNER in (p.model_extra or {}).get("early_stop", {}).get("segments", {}) and
               p.assignment(WINNER).gpus == 2 for p in rung_replans if any(a.job == WINNER for a in p.assignments))
    assert set(segments.section(last)["stopped"]) | {WINNER} == set(recs)
    # every plan DAG run succeeded: stopping early is not a failure
    for p in plans:
        dag = f"saturn_run__{p.plan_id}"
        run = af.wait_first_run(dag, timeout_s=240)
        assert af.wait_run(dag, run["dag_run_id"], timeout_s=600) == "success", p.plan_id
        states = {ti["task_id"]: ti["state"] for ti in af.task_instances(dag, run["dag_run_id"])}
        assert "failed" not in states.values(), states
    assert leases.overlaps(leases.history(store)) == []
    # the plan page: stopped jobs, rung lines, the winner in the successive-halving table
    r = httpx.get(f"{af.url}/saturn/plan", params={"plan_id": last.plan_id}, headers={"Authorization": f"Bearer {af.token()}"},
                  timeout=60)
    assert r.status_code == 200, r.text[:500]
    page = r.text
    assert 'class="rung"' in page and "Successive halving" in page
    assert f'<tr data-job="{WINNER}" data-state="done"><td class="win">' in page
    for j in recs:
        if j != WINNER:
            assert f'<tr data-job="{j}" data-state="stopped">' in page
    print(f"\nsuccessive halving e2e: planning {planned_at - t0:.0f} s, sweep {swept_at - planned_at:.0f} s, "
          f"{len(plans)} plan versions ({len(rung_replans)} rung re-plans)")
