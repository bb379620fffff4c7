"""End to end against a real Airflow (scheduler, dag-processor, triggerer, api-server; LocalExecutor;
SQLite; parallelism 4), driven through its REST API, with real profiling, solving and torch training
on this machine's CPU devices. One Airflow instance serves all three scenarios.

1. a 4-job workload on 2 devices: every job succeeds, in an order that respects `after`, never more
   pool slots in use than devices, never one device leased to two jobs at once;
2. one job made slower than profiled (data_args slow_after_step/slow_step_s): exactly one re-plan
   run, whose plan holds only the remaining jobs, and every job finishes exactly once;
3. a job that fits no node: the planning run fails at validation with the reason in the task log and
   no plan is published;
4. the same workload planned again (what a scheduled planning DAG does every period): a new sweep
   that trains every job again from step 0, while the first sweep's records stay as they were.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_harness import AirflowHarness  # noqa: E402

from saturn_airflow.execution import leases

from saturn_airflow.tasks import events as job_events
from saturn_airflow.store.records import PlanStore, ProgressStore, Store  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
N_DEVICES = 2


def ts(s: str | None) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else float("nan")


def workload(name: str, **over) -> dict:
    """The example tiny sweep (saturn_airflow/examples/tiny.yaml) as 4 explicit jobs on this machine's
    2 CPU devices, restricted to single/ddp to keep profiling short."""
    lm = {"model": "saturn_airflow.examples.models:gpt", "model_args": {"size": "tiny", "vocab": 1024, "seq_len": 64},
          "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 64, "vocab": 1024},
          "batch_size": 16, "steps": 200}
    vit = {"model": "saturn_airflow.examples.models:vit", "model_args": {"size": "tiny", "image_size": 16, "patch": 4},
           "data": "saturn_airflow.examples.data:images", "data_args": {"image_size": 16}, "batch_size": 32, "steps": 200}
    jobs = []
    for base, stem in ((lm, "lm"), (vit, "vit")):
        for lr in (1e-3, 3e-3):
            j = {"name": f"{stem}-lr{lr:g}", **yaml.safe_load(yaml.safe_dump(base)), "optimizer": {"name": "adamw", "lr": lr}}
            jobs.append(j)
    wl = {"name": name, "cluster": {"nodes": [{"name": "local", "gpus": N_DEVICES, "gpu_type": "cpu"}]},
          "parallelisms": ["single", "ddp"], "jobs": jobs}
    wl.update(over)
    return wl


@pytest.fixture(scope="module")
def af(tmp_path_factory):
    h = AirflowHarness(parallelism=4, env={"AIRFLOW__SATURN__DRIFT_POLL_S": "3"},
                       keep_home=bool(os.environ.get("SATURN_E2E_KEEP_HOME")))
    t = time.time()
    h.start()
    print(f"\nAirflow up in {time.time() - t:.0f} s at {h.url} (home {h.home}, pids {h.pids()})")
    yield h
    pids = list(h.pids().values())
    h.stop()
    for pid in pids:  # every process we started is gone
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.fixture(scope="module")
def wl_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("workloads")


def write(wl_dir, wl: dict) -> str:
    path = wl_dir / f"{wl['name']}.yaml"
    path.write_text(yaml.safe_dump(wl, sort_keys=False))
    return str(path)


class PoolSampler:
    """Samples /api/v2/pools while a plan runs: the scheduler's own view of slots in use."""

    def __init__(self, af: AirflowHarness, pool: str):
        self.af, self.pool, self.samples, self._stop = af, pool, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(2):
            try:
                p = self.af.pools().get(self.pool)
                if p:
                    self.samples.append(p)
            except Exception:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(10)


def plan_sweep(af: AirflowHarness, path: str, **params) -> tuple[str, str]:
    run_id = af.trigger("saturn_plan", {"workload": path, "time_limit": 10, **params})
    return run_id, af.wait_run("saturn_plan", run_id, timeout_s=900)


def explain(af, dag_id, run_id) -> str:
    out = []
    for ti in af.task_instances(dag_id, run_id):
        out.append(f"{ti['task_id']}[{ti['map_index']}] {ti['state']}")
        if ti["state"] not in ("success", "skipped"):
            try:
                out.append(af.task_log(dag_id, run_id, ti["task_id"], max(1, ti["try_number"] or 1), ti["map_index"])[-3000:])
            except Exception as e:
                out.append(f"(no log: {e})")
    return "\n".join(out)


def plans_of(af, name: str):
    return [p for p in PlanStore(Store(af.saturn_home)).plans() if p.workload == name]


def job_tis(af, plan) -> dict[str, dict]:
    dag_id = f"saturn_run__{plan.plan_id}"
    run = af.wait_first_run(dag_id, timeout_s=240)
    tis = af.task_instances(dag_id, run["dag_run_id"])
    return {ti["task_id"]: ti for ti in tis}


def max_concurrent_slots(tis: list[dict], pool: str) -> int:
    edges = []
    for ti in tis:
        if ti["pool"] == pool and ti["start_date"] and ti["end_date"]:
            edges += [(ts(ti["start_date"]), ti["pool_slots"]), (ts(ti["end_date"]), -ti["pool_slots"])]
    level = peak = 0
    for _, d in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts at the same instant
        level += d
        peak = max(peak, level)
    return peak


def done_once(af, name: str, jobs: set[str], sweep: str | None = None) -> None:
    ev = job_events.events(Store(af.saturn_home), name, sweep=sweep)
    ends = [e for e in ev if e["event"] == "end"]
    done = [e["job"] for e in ends if e["status"] == "done"]
    assert sorted(done) == sorted(jobs), f"jobs finished: {done}"
    for j in jobs:  # never two runs of one job at once
        spans = sorted((e["started_at"], e["ended_at"]) for e in ends if e["job"] == j)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{j} ran twice at once: {spans}"


# ---------------------------------------------------------------------------- scenario 3 (fast)
def test_job_that_fits_no_node_fails_at_validation(af, wl_dir):
    wl = workload("e2e-nofit", cluster={"nodes": [{"name": "small", "gpus": 1, "gpu_type": "cpu"}]})
    wl["jobs"][1]["parallelisms"] = ["ddp"]  # ddp needs 2 devices; the only node has 1
    af.wait_dag("saturn_plan", timeout_s=180)
    run_id, state = plan_sweep(af, write(wl_dir, wl))
    assert state == "failed"
    tis = {ti["task_id"]: ti for ti in af.task_instances("saturn_plan", run_id)}
    assert tis["validate"]["state"] == "failed" and tis["validate"]["try_number"] == 1  # no retry of bad input
    assert tis["ensure_pools"]["state"] == "upstream_failed"
    log = af.task_log("saturn_plan", run_id, "validate", 1)
    assert "lm-lr0.003" in log and "fits no node" in log, log[-2000:]
    assert plans_of(af, "e2e-nofit") == []


# ---------------------------------------------------------------------------- scenario 1
def test_four_jobs_on_two_devices(af, wl_dir):
    name = "e2e-basic"
    t0 = time.time()
    with PoolSampler(af, "saturn_local") as sampler:
        run_id, state = plan_sweep(af, write(wl_dir, workload(name)), drift_min_s=3600)
        assert state == "success", explain(af, "saturn_plan", run_id)
        plan_s = time.time() - t0
        (plan,) = plans_of(af, name)
        assert len(plan.assignments) == 4
        publish = {ti["task_id"]: ti for ti in af.task_instances("saturn_plan", run_id)}["publish"]
        dag_id = f"saturn_run__{plan.plan_id}"
        run = af.wait_first_run(dag_id, timeout_s=240)
        started_after = ts(run.get("queued_at") or run["run_after"]) - ts(publish["end_date"])
        assert started_after < 60, f"the plan's DAG run was created {started_after:.0f} s after publish"
        state = af.wait_run(dag_id, run["dag_run_id"], timeout_s=900)
        assert state == "success", explain(af, dag_id, run["dag_run_id"])
    tis = af.task_instances(dag_id, run["dag_run_id"])
    by_id = {ti["task_id"]: ti for ti in tis}
    for a in plan.assignments:
        ti = by_id[a.job]
        assert ti["state"] == "success"
        assert ti["pool"] == "saturn_local" and ti["pool_slots"] == a.gpus
        for b in a.after:  # order respects `after`
            assert ts(ti["start_date"]) >= ts(by_id[b]["end_date"]) - 1e-3, (a.job, b)
    assert by_id["drift_watch"]["state"] == "success" and by_id["trigger_replan"]["state"] == "skipped"
    a0 = plan.assignments[0]
    log = af.task_log(dag_id, run["dag_run_id"], a0.job, 1)
    assert f"devices {a0.gpu_ids}" in log and "steps/s" in log, log[-2000:]  # progress streamed into the log
    assert max_concurrent_slots(tis, "saturn_local") <= N_DEVICES
    assert sampler.samples and max(s["running_slots"] for s in sampler.samples) <= N_DEVICES
    assert all(s["slots"] == N_DEVICES for s in sampler.samples)
    assert leases.overlaps(leases.history(Store(af.saturn_home))) == []
    done_once(af, name, {a.job for a in plan.assignments})
    first_start = min(ts(by_id[a.job]["start_date"]) for a in plan.assignments)
    last_end = max(ts(by_id[a.job]["end_date"]) for a in plan.assignments)
    print(f"\nscenario 1: planning {plan_s:.0f} s, DAG run created {started_after:.0f} s after publish, "
          f"planned makespan {plan.makespan_s:.0f} s, actual {last_end - first_start:.0f} s")


# ---------------------------------------------------------------------------- scenario 2
def test_slow_job_triggers_exactly_one_replan(af, wl_dir):
    """A job slows by 0.5 s a step from step 20 while a job planned after it still waits: a re-plan has a choice (move
    the waiting job). Every job carries the slowdown, gated by its own file; the test starts it in the
    plan's first job that another job waits for (a plan is free to order equal jobs either way)."""
    name = "e2e-drift"
    wl = workload(name)
    for j in wl["jobs"]:
        j["data_args"].update(slow_after_step=20, slow_step_s=0.5, slow_after_file=str(wl_dir / f"go-{name}-{j['name']}"))
    run_id, state = plan_sweep(af, write(wl_dir, wl), drift_min_s=20, drift_threshold=0.1)
    assert state == "success", explain(af, "saturn_plan", run_id)
    (v1,) = plans_of(af, name)
    slow = next(b for a in v1.assignments for b in a.after)
    (wl_dir / f"go-{name}-{slow}").write_text("slow down")
    dag1 = f"saturn_run__{v1.plan_id}"
    run1 = af.wait_first_run(dag1, timeout_s=240)
    # the drift sensor of v1 triggers the re-plan run (run id replan__<v1>)
    replan_run = f"replan__{v1.plan_id}"
    deadline = time.time() + 600
    while time.time() < deadline and not any(r["dag_run_id"] == replan_run for r in af.runs("saturn_plan")):
        time.sleep(3)
    assert any(r["dag_run_id"] == replan_run for r in af.runs("saturn_plan")), explain(af, dag1, run1["dag_run_id"])
    state = af.wait_run("saturn_plan", replan_run, timeout_s=600)
    assert state == "success", explain(af, "saturn_plan", replan_run)
    v2 = [p for p in plans_of(af, name) if p.parent_plan_id == v1.plan_id]
    assert len(v2) == 1
    v2 = v2[0]
    extra = v2.model_extra
    done_at_replan = set(extra["replan"]["done"])
    assert {a.job for a in v2.assignments} == {a.job for a in v1.assignments} - done_at_replan  # only remaining work
    assert slow in {a.job for a in v2.assignments}
    assert "later than the planned" in extra["reason"]
    dag2 = f"saturn_run__{v2.plan_id}"
    run2 = af.wait_first_run(dag2, timeout_s=240)
    assert af.wait_run(dag2, run2["dag_run_id"], timeout_s=900) == "success", explain(af, dag2, run2["dag_run_id"])
    assert af.wait_run(dag1, run1["dag_run_id"], timeout_s=300) in ("success", "failed")
    tis2 = {ti["task_id"]: ti for ti in af.task_instances(dag2, run2["dag_run_id"])}
    assert tis2["trigger_replan"]["state"] == "skipped", (  # the re-planned run did not drift again
        f"v1 {v1.to_json()}\nv2 {v2.to_json()}\n" + af.task_log(dag2, run2["dag_run_id"], "drift_watch", 1)[-3000:])
    # exactly one re-plan run, and exactly one new plan version
    replans = [r for r in af.runs("saturn_plan") if (r.get("conf") or {}).get("replan_of")]
    assert [r["dag_run_id"] for r in replans] == [replan_run]
    assert len(plans_of(af, name)) == 2
    done_once(af, name, {a.job for a in v1.assignments})
    assert leases.overlaps(leases.history(Store(af.saturn_home))) == []
    tis1 = af.task_instances(dag1, run1["dag_run_id"])
    assert max_concurrent_slots(tis1 + list(tis2.values()), "saturn_local") <= N_DEVICES
    print(f"\nscenario 2: v1 {v1.makespan_s:.0f} s planned; re-plan {extra['replan']['option']} "
          f"(kept {extra['kept']}, preempted {extra['preempted']}, done {sorted(done_at_replan)}); "
          f"v2 {v2.makespan_s:.0f} s planned for {len(v2.assignments)} jobs")


# ---------------------------------------------------------------------------- scenario 4
def test_the_same_workload_planned_again_is_a_new_sweep(af, wl_dir):
    """Scenario 1's workload (same name, same jobs; 20 steps to keep it short) triggered again."""
    name = "e2e-basic"
    wl = workload(name)
    for j in wl["jobs"]:
        j["steps"] = 20
    path = wl_dir / "again" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(wl, sort_keys=False))
    st = Store(af.saturn_home)
    sweeps = []
    t0 = time.time()
    for _ in range(1 if plans_of(af, name) else 2):  # run alone, it makes the first sweep itself
        before = {p.plan_id for p in plans_of(af, name)}
        run_id, state = plan_sweep(af, str(path), drift_min_s=3600)
        assert state == "success", explain(af, "saturn_plan", run_id)
        (new,) = [p for p in plans_of(af, name) if p.plan_id not in before]
        assert new.parent_plan_id is None and new.sweep_id == new.plan_id  # a root: a sweep of its own
        dag_id = f"saturn_run__{new.plan_id}"
        run = af.wait_first_run(dag_id, timeout_s=240)
        assert af.wait_run(dag_id, run["dag_run_id"], timeout_s=900) == "success", explain(af, dag_id, run["dag_run_id"])
        for a in new.assignments:
            log = af.task_log(dag_id, run["dag_run_id"], a.job, 1)
            assert "already finished" not in log, log[-2000:]
            rec = ProgressStore(st, sweep=new.sweep).get(name, a.job)
            assert (rec["state"], rec["plan_id"], rec["step"], rec.get("start_step")) == ("done", new.plan_id, 20, 0), rec
        done_once(af, name, {a.job for a in new.assignments}, sweep=new.sweep)
        sweeps.append(new.sweep)
    earlier = sorted({p.sweep for p in plans_of(af, name)} - {sweeps[-1]})
    assert earlier  # the first sweep is still there, its jobs done exactly once, untouched by the second
    for sweep in earlier:
        done_once(af, name, {a.job for p in plans_of(af, name) if p.sweep == sweep for a in p.assignments}, sweep=sweep)
    assert leases.overlaps(leases.history(st)) == []
    print(f"\nscenario 4: {len(sweeps)} new sweep(s) of {name} planned and trained in {time.time() - t0:.0f} s")
