"""The closed loop under faults, against a real Airflow (scheduler, dag-processor, triggerer,
api-server; LocalExecutor), real profiling, solving and torch training on this machine's 2 CPU devices.
One Airflow serves the module; faults are injected by PID or through the example data factory's
knobs (saturn_airflow/examples/data.py), never by process name.

1. warm-up and faults: every launch's first seconds run 10x slower than steady, and meanwhile one
   rank is SIGKILLed, the Airflow task process of another job is SIGKILLed, the api-server is
   restarted, and a job fails on both its attempts. No re-plan; the run ends failed and the Gantt
   page and `saturn show` name the job and the reason; clearing its task resumes it from its
   checkpoint and the run ends success.
2. a real slowdown with the scheduler and triggerer killed and restarted: one job slows 3x half-way
   after both came back; the drift watch (resumed by the new triggerer) re-plans exactly once, within
   two looks of crossing the threshold; a second re-plan run of the same plan, started at the same
   moment, races it and leaves no second version.
3. one short seeded soak round (bench/soak.py): random jobs and faults, the soak's invariants.

Every scenario ends with every job done exactly once (the events log), at most one checkpoint
interval lost at each restart (the per-step loss logs) and no device id leased to two jobs at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "bench"))
from airflow_harness import AirflowHarness  # noqa: E402

import soak  # noqa: E402

from saturn_airflow.execution import leases  # noqa: E402
from saturn_airflow.execution.launch import LOSS_LOG, checkpoint_root  # noqa: E402
from saturn_airflow.store.files import PlanStore, ProgressStore, Store  # noqa: E402
from saturn_airflow.tasks import events as job_events  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

LM = {"model": "saturn_airflow.examples.models:gpt", "model_args": dict(soak.LM[0]),
      "data": "saturn_airflow.examples.data:tokens",
      "data_args": {"seq_len": soak.LM[0]["seq_len"], "vocab": soak.LM[0]["vocab"]}, "batch_size": 8,
      "optimizer": {"name": "adamw", "lr": 1e-3}}
VIT = {"model": "saturn_airflow.examples.models:vit", "model_args": dict(soak.VIT[0]),
       "data": "saturn_airflow.examples.data:images", "data_args": {"image_size": soak.VIT[0]["image_size"]},
       "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}


@pytest.fixture(scope="module")
def af():
    h = AirflowHarness(parallelism=4, env=soak.airflow_env(), keep_home=bool(os.environ.get("SATURN_E2E_KEEP_HOME")),
                       port=int(os.environ["SATURN_E2E_PORT"]) if os.environ.get("SATURN_E2E_PORT") else None)
    t = time.time()
    h.start()
    print(f"\nAirflow up in {time.time() - t:.0f} s at {h.url} (home {h.home}, pids {h.pids()})")
    h.wait_dag("saturn_plan", timeout_s=300)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("closed-loop")


def job(name: str, base: dict, steps: int, parallelisms=("single", "ddp"), **data_args) -> dict:
    j = json.loads(json.dumps(base))
    j.update(name=name, steps=steps, parallelisms=list(parallelisms))
    j["data_args"].update(data_args)
    return j


def write_workload(work, name: str, jobs: list[dict]) -> str:
    wl = {"name": name, "cluster": {"nodes": [{"name": "local", "gpus": 2, "gpu_type": "cpu"}]},
          "parallelisms": ["single", "ddp"], "jobs": jobs}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(wl, sort_keys=False))
    return str(path)


def plan_sweep(af, path: str, **params) -> str:
    run_id = af.trigger("saturn_plan", {"workload": path, "time_limit": 5, **params})
    state = af.wait_run("saturn_plan", run_id, timeout_s=1200)
    assert state == "success", explain(af, "saturn_plan", run_id)
    return run_id


def explain(af, dag_id, run_id) -> str:
    out = []
    for ti in af.task_instances(dag_id, run_id):
        out.append(f"{ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']}")
        if ti["state"] not in ("success", "skipped"):
            try:
                out.append(af.task_log(dag_id, run_id, ti["task_id"], max(1, ti["try_number"] or 1), ti["map_index"])[-3000:])
            except Exception as e:  # noqa: BLE001
                out.append(f"(no log: {e})")
    return "\n".join(out)


def plans_of(af, name: str):
    return sorted((p for p in PlanStore(Store(af.saturn_home)).plans() if p.workload == name), key=lambda p: p.created_at)


def sweep_of(af, name: str) -> str:
    """The sweep of the workload's (one) planning run: its root plan's id."""
    return plans_of(af, name)[0].sweep


def record(af, name: str, job_name: str) -> dict:
    return ProgressStore(Store(af.saturn_home), sweep=sweep_of(af, name)).get(name, job_name) or {}


def wait_for(cond, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(poll_s)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def loss_log(af, name: str, job_name: str) -> list[dict]:
    return soak.read_loss_log(os.path.join(checkpoint_root(af.saturn_home, name, job_name, sweep=sweep_of(af, name)),
                                           LOSS_LOG))


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def common_checks(af, name: str, jobs: list[str]) -> None:
    """Done exactly once, at most one checkpoint interval lost per restart, no device leased twice."""
    store = Store(af.saturn_home)
    ends = [e for e in job_events.events(store, name, sweep_of(af, name)) if e["event"] == "end"]
    for j in jobs:
        assert sum(1 for e in ends if e["job"] == j and e["status"] == "done") == 1, (j, ends)
        spans = sorted((e["started_at"], e["ended_at"]) for e in ends if e["job"] == j)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{j} ran twice at once: {spans}"
        assert record(af, name, j).get("state") == "done"
        assert soak.lost_work(loss_log(af, name, j), soak.CKPT_EVERY_S) == [], j
    assert leases.overlaps(leases.history(store)) == []


# ---------------------------------------------------------------------------- 1. warm-up and faults
def test_warm_up_never_replans_and_faults_lose_no_job(af, work):
    name = "cl-warmup-faults"
    warm = {"warmup_slow_s": 4.0, "warmup_factor": 10.0}  # every launch's first 4 s run 10x slower
    fdir = str(work / "faults" / name)
    # lm-a is held at a slower pace from step 100 until its rank is killed (the test removes the file),
    # so the kill lands in a window of seconds however fast a quiet box runs it (400 plain steps took
    # ~3 s on CI's box, between two looks); 0.03 s a step is far under the drift thresholds
    hold = work / "faults" / f"{name}.hold"
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.write_text("hold lm-a from step 100 until its rank is killed")
    held = {"slow_after_step": 100, "slow_step_s": 0.03, "slow_after_file": str(hold)}
    # vit-b long enough (~30 s on a quiet box) that its task is still running once lm-a's faults are done
    jobs = [job("lm-a", LM, 400, **warm, **held), job("vit-b", VIT, 3000, **warm),
            job("lm-c", LM, 300, ("single",), fault_dir=fdir, fail_at_step=100, fail_times=2, **warm),
            job("vit-d", VIT, 120, **warm)]
    # thresholds wide enough for a loaded box's swings against the profile, far below what the warm-up
    # alone, taken for a rate, would have projected (several times the plan)
    plan_sweep(af, write_workload(work, name, jobs), drift_min_s=45, drift_threshold=0.5)
    (plan,) = plans_of(af, name)
    dag_id = f"saturn_run__{plan.plan_id}"
    run = af.wait_first_run(dag_id, timeout_s=300)
    store = Store(af.saturn_home)
    faults: dict[str, str] = {}
    orphans: list[int] = []  # the killed task's training processes: checked after the loop, which must not block

    # the faults, each once, whenever its job gets there (the plan decides the order)
    def kill_rank():  # SIGKILL of one training rank of lm-a (the non-zero one when it runs on two devices)
        rec = record(af, name, "lm-a")
        if rec.get("state") != "running" or rec.get("step", 0) < 100 or not rec.get("pid"):
            return False
        ranks = children(rec["launcher_pid"]) if rec.get("launcher_pid") else []
        victim = next((p for p in ranks if p != rec["pid"]), rec["pid"])
        os.kill(victim, signal.SIGKILL)
        hold.unlink()
        faults["rank"] = f"SIGKILL rank pid {victim} of lm-a at step >= {rec['step']}"
        old, new = af.restart("api-server")  # and the api-server restarts while tasks report through it
        faults["api"] = f"api-server {old} -> {new}"
        return True

    def kill_task():  # SIGKILL of the Airflow task process running vit-b (the holder of its job lease)
        rec = record(af, name, "vit-b")
        holder = leases.holder(store, leases.job_key(name, "vit-b", sweep=plan.sweep))
        if rec.get("state") != "running" or rec.get("step", 0) < 50 or not holder:
            return False
        os.kill(int(holder["pid"]), signal.SIGKILL)
        faults["task"] = f"SIGKILL task process {holder['pid']} of vit-b at step >= {rec['step']}"
        orphans.extend(p for p in (rec["pid"], rec.get("launcher_pid")) if p)
        return True

    pending = {"rank": kill_rank, "task": kill_task}
    deadline = time.time() + 1500
    while pending and time.time() < deadline and af.run(dag_id, run["dag_run_id"])["state"] == "running":
        for key, fire in list(pending.items()):
            if fire():
                pending.pop(key)
        time.sleep(0.5)
    assert not pending, f"faults never injected: {sorted(pending)} ({faults})"
    # the killed task's training must not outlive it: torchrun and the ranks stop (checkpoint) on their own
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in orphans), 120, "the killed task's ranks stopped")
    faults["task"] += "; its ranks stopped by themselves"

    state = af.wait_run(dag_id, run["dag_run_id"], timeout_s=1500)
    assert state == "failed", explain(af, dag_id, run["dag_run_id"])  # lm-c failed for good: not dropped silently
    tis = {ti["task_id"]: ti for ti in af.task_instances(dag_id, run["dag_run_id"])}
    assert tis["lm-c"]["state"] == "failed" and tis["plan_result"]["state"] == "failed"
    assert all(tis[j]["state"] == "success" for j in ("lm-a", "vit-b", "vit-d")), explain(af, dag_id, run["dag_run_id"])
    verdict = af.task_log(dag_id, run["dag_run_id"], "plan_result", 1)
    assert "lm-c" in verdict and "injected failure at step 100" in verdict, verdict[-2000:]
    page = _plugin_page(af, plan.plan_id)
    assert 'class="failed-jobs"' in page and "lm-c" in page and "injected failure at step 100" in page
    show = subprocess.run([sys.executable, "-m", "saturn_airflow.cli", "show", plan.plan_id, "--store", af.saturn_home],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and "FAILED lm-c: RuntimeError: injected failure at step 100" in show.stdout, show

    # clearing the failed task (and its downstream verdict) resumes lm-c from its checkpoint
    failed_at = record(af, name, "lm-c")["step"]
    af.api("POST", f"/dags/{dag_id}/clearTaskInstances",
           json={"dry_run": False, "task_ids": ["lm-c"], "dag_run_id": run["dag_run_id"], "include_downstream": True,
                 "only_failed": False, "reset_dag_runs": True})
    wait_for(lambda: af.run(dag_id, run["dag_run_id"])["state"] != "failed", 120, "the run reopened")
    assert af.wait_run(dag_id, run["dag_run_id"], timeout_s=900) == "success", explain(af, dag_id, run["dag_run_id"])
    launches = soak.launches(loss_log(af, name, "lm-c"))
    assert launches[-1]["start"] > 0 and launches[-1]["start"] <= failed_at  # resumed, from a checkpoint
    tis = {ti["task_id"]: ti for ti in af.task_instances(dag_id, run["dag_run_id"])}
    log = af.task_log(dag_id, run["dag_run_id"], "lm-c", tis["lm-c"]["try_number"])
    assert f"resuming at step {launches[-1]['start']}" in log

    # no re-plan: the warm-up never fooled the drift watch, the restarts stayed under the thresholds
    assert len(plans_of(af, name)) == 1
    assert not [r for r in soak.planning_runs(af) if (r.get("conf") or {}).get("replan_of") == plan.plan_id]
    common_checks(af, name, [j["name"] for j in jobs])
    assert len(soak.launches(loss_log(af, name, "lm-a"))) >= 2 and len(soak.launches(loss_log(af, name, "vit-b"))) >= 2
    print(f"\nscenario 1: {faults}; lm-c failed at step {failed_at}, resumed at {launches[-1]['start']}")


def _plugin_page(af, plan_id: str) -> str:
    import httpx

    r = httpx.get(f"{af.url}/saturn/plan", params={"plan_id": plan_id},
                  headers={"Authorization": f"Bearer {af.token()}"}, timeout=60)
    r.raise_for_status()
    return r.text


# ---------------------------------------------------------------------------- 2. slowdown, restarts, race
def test_a_real_slowdown_replans_once_after_scheduler_and_triggerer_restart(af, work):
    name = "cl-slowdown"
    faults_dir = work / "faults" / name
    slow_from = 1000
    pair = ("lm-a", "lm-b")
    jobs = [job(j, LM, 4000, ("single",), slow_after_step=slow_from, slow_factor=4.0,
                slow_after_file=str(faults_dir / f"{j}.go"), fault_dir=str(faults_dir / j)) for j in pair]
    jobs[1]["optimizer"]["lr"] = 2e-3
    jobs.append(job("lm-y", LM, 7500, ("single",)))
    # lm-y fills one device, lm-a and lm-b share the other (the only balanced split), so the second of the
    # pair waits for the first and a re-plan has a choice (it can move the waiting one). Which of the two
    # goes first is the solver's tie to break, so the test reads the plan and slows the first one:
    # 4x from step 1000-2000 on is 75-112% late; a loaded box's swings against the profile stay under 50%
    plan_sweep(af, write_workload(work, name, jobs), drift_min_s=15, drift_threshold=0.5)
    (v1,) = plans_of(af, name)
    slow = min(pair, key=lambda j: v1.assignment(j).start_s)
    other = next(j for j in pair if j != slow)
    assert slow in v1.assignment(other).after, v1.assignments  # the other waits for it
    go, fdir = faults_dir / f"{slow}.go", faults_dir / slow  # its start switch and where it says it began
    dag1 = f"saturn_run__{v1.plan_id}"
    run1 = af.wait_first_run(dag1, timeout_s=300)
    # once the drift watch is deferred, the scheduler and the triggerer (holding it) die and come back
    wait_for(lambda: {ti["task_id"]: ti["state"] for ti in af.task_instances(dag1, run1["dag_run_id"])}.get(
        "drift_watch") == "deferred", 300, "the drift watch deferred")
    s_old = af.kill("scheduler")
    t_old = af.kill("triggerer")
    s_new, t_new = af._spawn("scheduler").pid, af._spawn("triggerer").pid
    af.wait_healthy(300)
    # then the first of the pair slows 4x, from step 1000 (or from where it is now, if the restarts took longer)
    wait_for(lambda: record(af, name, slow).get("step", 0) >= slow_from, 900, f"{slow} at step {slow_from}")
    go.parent.mkdir(parents=True, exist_ok=True)
    go.write_text("slow down")
    began = json.loads(wait_for(lambda: (fdir / "slow-began").exists() and (fdir / "slow-began").read_text(), 300,
                                "the slowdown began"))
    assert began["step"] <= 2000, f"too late for the slowdown to matter: {began}"

    # the re-plan run; the instant it exists, a second re-plan of the same plan races it
    replan_run = f"replan__{v1.plan_id}"
    wait_for(lambda: any(r["dag_run_id"] == replan_run for r in soak.planning_runs(af)), 900, "the drift re-plan",
             poll_s=0.5)
    rival = af.trigger("saturn_plan", {"replan_of": v1.plan_id, "reason": "a racing second re-plan", "time_limit": 5})
    assert af.wait_run("saturn_plan", replan_run, timeout_s=900) == "success", explain(af, "saturn_plan", replan_run)
    assert af.wait_run("saturn_plan", rival, timeout_s=900) == "success", explain(af, "saturn_plan", rival)
    solves = [{ti["task_id"]: ti for ti in af.task_instances("saturn_plan", r)}["solve"]["state"] for r in (replan_run, rival)]
    assert sorted(solves) == ["skipped", "success"], solves  # exactly one holds the claim

    plans = plans_of(af, name)
    assert len(plans) == 2 and plans[1].parent_plan_id == v1.plan_id  # one new version, not two
    v2 = plans[1]
    assert slow in {a.job for a in v2.assignments}
    # within two looks of crossing the threshold, and the first late look soon after the slowdown began
    event = af.api("GET", f"/dags/{dag1}/dagRuns/{run1['dag_run_id']}/taskInstances/drift_watch/xcomEntries/return_value")
    ev = event["value"] if isinstance(event["value"], dict) else json.loads(event["value"])
    looks = ev["late_looks"]
    poll = float(soak.airflow_env()["AIRFLOW__SATURN__DRIFT_POLL_S"])
    assert len(looks) <= 3 and looks[-1] - looks[0] <= 2 * poll + 3, looks
    t_slow = began["t"]
    assert t_slow <= looks[0] < t_slow + 5 + 3 + poll + 15, (looks, t_slow)  # the slowdown's: window, record, look
    dag2 = f"saturn_run__{v2.plan_id}"
    run2 = af.wait_first_run(dag2, timeout_s=300)
    assert af.wait_run(dag2, run2["dag_run_id"], timeout_s=1200) == "success", explain(af, dag2, run2["dag_run_id"])
    assert af.wait_run(dag1, run1["dag_run_id"], timeout_s=300) == "success", explain(af, dag1, run1["dag_run_id"])
    tis2 = {ti["task_id"]: ti for ti in af.task_instances(dag2, run2["dag_run_id"])}
    assert tis2["trigger_replan"]["state"] == "skipped"  # exactly once: the child did not drift again
    common_checks(af, name, [j["name"] for j in jobs])
    print(f"\nscenario 2: scheduler {s_old}->{s_new}, triggerer {t_old}->{t_new}; late looks {looks} "
          f"({looks[0] - t_slow:.1f} s after the slowdown); re-plan {v2.model_extra['replan']['option']}; "
          f"solves {solves}")


# ---------------------------------------------------------------------------- 3. one soak round
def test_one_seeded_soak_round(af, work):
    # the scenarios' model shapes and parallelisms: their profiles are cached, the round trains at once
    spec = soak.draw_round(int(os.environ.get("SATURN_SOAK_SEED", 2)), 0, str(work / "soak-faults"), max_jobs=3,
                           max_steps=160, lm_shapes=soak.LM[:1], vit_shapes=soak.VIT[:1],
                           parallelisms=["single", "ddp"])
    out = soak.run_round(af, spec, str(work), timeout_s=1500)
    bad, stats = soak.check_round(af, spec, out, str(work / "soak-refs"))
    assert bad == [], (spec["faults"], bad, stats)
    print(f"\nsoak round: {len(spec['workload']['jobs'])} jobs, faults {spec['faults']}, {stats}")
