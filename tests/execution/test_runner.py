"""The job runner on real torch.distributed: resume across parallelisms and world sizes, SIGTERM
preemption, SIGKILL of a rank (at most one checkpoint interval lost), progress records."""

from __future__ import annotations

import json
import os
import re
import signal
import threading

import psutil
import pytest
import torch

from saturn_airflow.execution.checkpoint import read_latest
from saturn_airflow.execution.devices import Devices
from saturn_airflow.execution.launch import checkpoint_root, run_job
from saturn_airflow.parallelisms import get_parallelism
from saturn_airflow.store.records import BY_HAND, ProgressStore, Store
from saturn_airflow.spec.workload import parse_workload

STEPS = 6


def workload(steps=STEPS, slow_s=0.0):
    data_args = {"seq_len": 32, "vocab": 256}
    if slow_s:
        data_args.update(slow_after_step=0, slow_step_s=slow_s)
    return parse_workload({"name": "run-test", "jobs": [{
        "name": "lm", "model": "saturn_airflow.examples.models:gpt",
        "model_args": {"size": "tiny", "vocab": 256, "seq_len": 32},
        "data": "saturn_airflow.examples.data:tokens", "data_args": data_args,
        "batch_size": 8, "steps": steps, "optimizer": {"name": "adamw", "lr": 1e-3}}]})


def reference(steps):
    cpu = Devices(ids=[0], kind="cpu", device=torch.device("cpu"))
    tr = get_parallelism("single").build(workload(steps).job("lm"), cpu, {})
    return [tr.step(s) for s in range(steps)]


@pytest.fixture(scope="module")
def ref6():
    return reference(STEPS)


def losses_by_step(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "step" in r:  # a launch's first line says where it started
                out.setdefault(r["step"], []).append(r["loss"])
    return out


def run(tmp_path, wl, par, devices, **kw):
    kw.setdefault("log", lambda line: None)
    return run_job(wl, "lm", parallelism=par, knobs=kw.pop("knobs", {}), device_ids=devices,
                   store_url=str(tmp_path / "store"), plan_id="p1", loss_log=str(tmp_path / "losses.jsonl"),
                   timeout_s=180, **kw)


@pytest.mark.distributed
@pytest.mark.parametrize("a,a_dev,a_knobs,b,b_dev,b_knobs", [
    ("ddp", [0, 1], {}, "fsdp", [0, 1], {"checkpoint": True}),
    ("fsdp", [0, 1], {}, "single", [0], {}),
    ("pipeline", [0, 1], {"schedule": "gpipe", "microbatches": 2}, "ddp", [0, 1], {}),
])
def test_resume_under_another_parallelism_matches_uninterrupted(tmp_path, ref6, a, a_dev, a_knobs, b, b_dev, b_knobs):
    """Steps 0-2 under A (stopped as if preempted), 3-5 under B: every loss equals the single-process run."""
    wl = workload()
    first = run(tmp_path, wl, a, a_dev, knobs=a_knobs, stop_at_step=3)
    assert first.status == "preempted" and first.step == 3, first.message
    ptr = read_latest(first.checkpoint_dir)
    assert ptr["step"] == 3 and ptr["parallelism"] == a and ptr["world_size"] == len(a_dev)
    second = run(tmp_path, wl, b, b_dev, knobs=b_knobs)
    assert second.status == "done", second.message
    got = losses_by_step(tmp_path / "losses.jsonl")
    assert sorted(got) == list(range(STEPS))
    for s, vals in got.items():
        assert vals == pytest.approx([ref6[s]] * len(vals), abs=2e-5), (s, vals, ref6[s])
    rec = ProgressStore(Store(str(tmp_path / "store")), sweep=BY_HAND).get("run-test", "lm")
    assert rec["state"] == "done" and rec["step"] == STEPS and rec["total"] == STEPS
    for k in ("plan_id", "rate_steps_per_s", "started_at", "updated_at", "finished_at", "parallelism", "device_ids"):
        assert k in rec, k
    assert rec["parallelism"] == b and rec["device_ids"] == b_dev


@pytest.mark.distributed
def test_sigterm_preempts_sigkill_loses_at_most_one_interval_and_resume_is_exact(tmp_path):
    steps, every = 30, 3
    ref = reference(steps)
    wl = workload(steps, slow_s=0.08)  # a sleep per step (data drift knob): time to act mid-run
    step_re = re.compile(r"step (\d+)/")

    # 1) fsdp x2, SIGTERM through stop_event once step 5 is logged: preempted with a checkpoint
    stop = threading.Event()

    def watch_term(line):
        m = step_re.search(line)
        if m and int(m.group(1)) >= 5:
            stop.set()

    r1 = run(tmp_path, wl, "fsdp", [0, 1], stop_event=stop, log=watch_term, progress_every_s=0.0)
    assert r1.status == "preempted", r1.message
    k1 = read_latest(r1.checkpoint_dir)["step"]
    assert 5 <= k1 < steps and r1.step == k1
    assert ProgressStore(Store(str(tmp_path / "store")), sweep=BY_HAND).get("run-test", "lm")["state"] == "preempted"

    # 2) ddp x2 resumes at k1; SIGKILL one rank a few steps later: failed, at most one interval lost
    procs = {}
    seen = {"max": 0, "killed": False}

    def watch_kill(line):
        m = step_re.search(line)
        if m:
            seen["max"] = max(seen["max"], int(m.group(1)))
            if seen["max"] >= k1 + 2 * every + 1 and not seen["killed"]:
                ranks = [p for p in psutil.Process(procs["p"].pid).children(recursive=True)
                         if "saturn_airflow.execution.runner" in " ".join(p.cmdline())]
                seen["killed"] = True
                os.kill(ranks[-1].pid, signal.SIGKILL)

    r2 = run(tmp_path, wl, "ddp", [0, 1], ckpt_every_steps=every, log=watch_kill, progress_every_s=0.0,
             on_start=lambda p: procs.__setitem__("p", p))
    assert seen["killed"] and r2.status == "failed", (r2.status, r2.message)
    k2 = read_latest(r2.checkpoint_dir)["step"]
    assert seen["max"] - k2 <= every, (seen["max"], k2)
    assert ProgressStore(Store(str(tmp_path / "store")), sweep=BY_HAND).get("run-test", "lm")["state"] == "interrupted"  # a retry resumes it

    # 3) single x1 finishes from k2; every logged loss (re-done steps included) equals the uninterrupted run
    r3 = run(tmp_path, wl, "single", [0])
    assert r3.status == "done", r3.message
    got = losses_by_step(tmp_path / "losses.jsonl")
    assert sorted(got) == list(range(steps))
    for s, vals in got.items():
        assert vals == pytest.approx([ref[s]] * len(vals), abs=3e-5), (s, vals, ref[s])


@pytest.mark.distributed
def test_one_device_runs_without_torchrun_and_sigterm_still_preempts(tmp_path):
    """A one-device launch starts the runner itself (no torchrun agent); SIGTERM still ends it with a
    checkpoint, and the resumed run finishes with the uninterrupted run's losses."""
    steps = 20
    ref = reference(steps)
    wl = workload(steps, slow_s=0.08)
    stop = threading.Event()
    procs = {}

    def watch(line):
        m = re.search(r"step (\d+)/", line)
        if m and int(m.group(1)) >= 4:
            stop.set()

    r1 = run(tmp_path, wl, "single", [1], stop_event=stop, log=watch, progress_every_s=0.0,
             on_start=lambda p: procs.__setitem__("cmd", p.args))
    assert "torch.distributed.run" not in procs["cmd"] and "saturn_airflow.execution.runner" in procs["cmd"]
    assert r1.status == "preempted", r1.message
    k1 = read_latest(r1.checkpoint_dir)["step"]
    assert 4 <= k1 < steps
    r2 = run(tmp_path, wl, "single", [0])
    assert r2.status == "done" and r2.returncode == 0, r2.message
    got = losses_by_step(tmp_path / "losses.jsonl")
    assert sorted(got) == list(range(steps))
    for s, vals in got.items():
        assert vals == pytest.approx([ref[s]] * len(vals), abs=3e-5), (s, vals, ref[s])


def test_checkpoint_root_is_under_the_store(tmp_path):
    assert checkpoint_root(str(tmp_path), "w", "j", sweep="s") == os.path.join(str(tmp_path), "checkpoints", "w", "s", "j")
    assert checkpoint_root(str(tmp_path), "w", "j", sweep="s", checkpoint_dir="/x/y") == "/x/y"


def test_failed_job_reports_root_cause(tmp_path):
    wl = parse_workload({"name": "bad", "jobs": [{"name": "lm", "model": "saturn_airflow.examples.models:nope",
                                                    "data": "saturn_airflow.examples.data:tokens", "batch_size": 2,
                                                    "steps": 1}]})
    r = run_job(wl, "lm", parallelism="single", knobs={}, device_ids=[0], store_url=str(tmp_path), plan_id="p",
                log=lambda s: None, timeout_s=120)
    assert r.status == "failed" and "nope" in r.message


def test_checkpoints_new_dir_each_atomic_pointer_partial_dirs_ignored(tmp_path):
    """In-process (DCP needs no process group for one rank): the pointer moves only to complete saves."""
    from saturn_airflow.execution.checkpoint import CheckpointManager

    cpu = Devices(ids=[0], kind="cpu", device=torch.device("cpu"))
    job = workload().job("lm")
    tr = get_parallelism("single").build(job, cpu, {})
    ck = CheckpointManager(str(tmp_path), devices=cpu, keep=1, every_s=None, every_steps=2)
    assert ck.load(tr) == 0 and read_latest(str(tmp_path)) is None
    tr.step(0)
    first = ck.save(tr, 1)
    (tmp_path / "step-000000009-crashed").mkdir()  # a save killed midway: no .metadata
    assert read_latest(str(tmp_path))["step"] == 1
    tr.step(1)
    second = ck.save(tr, 2)
    assert first != second and not os.path.exists(first) and os.path.exists(os.path.join(second, ".metadata"))
    assert not (tmp_path / "step-000000009-crashed").exists()  # abandoned partial saves are cleaned up
    assert ck.due(4) and not ck.due(3)
    fresh = get_parallelism("single").build(job, cpu, {})
    assert ck.load(fresh) == 2
    for (n, a), (_, b) in zip(tr.model.named_parameters(), fresh.model.named_parameters()):
        assert torch.equal(a, b), n
    os.remove(os.path.join(second, ".metadata"))  # pointer to an incomplete dir: treated as no checkpoint
    assert read_latest(str(tmp_path)) is None


def test_progress_records_carry_the_recent_rate(tmp_path, monkeypatch):
    """The whole-run rate keeps a slow start; the recent rate is the pace since the previous record."""
    from saturn_airflow.execution import runner

    now = [100.0]
    monkeypatch.setattr(runner.time, "time", lambda: now[0])
    rep = runner.ProgressReporter(workload="w", job="j", plan_id="p", sweep=BY_HAND, parallelism="ddp", device_ids=[0],
                                  store_url=str(tmp_path), every_s=0.0)
    rep.start(0, 100)
    now[0] = 110.0
    rep.update(10, 1.0)  # 10 steps in 10 s
    now[0] = 115.0
    rep.update(30, 1.0)  # then 20 steps in 5 s
    rec = ProgressStore(Store(str(tmp_path)), sweep=BY_HAND).get("w", "j")
    assert rec["step"] == 30
    assert rec["rate_steps_per_s"] == pytest.approx(30 / 15)
    assert rec["recent_rate_steps_per_s"] == pytest.approx(20 / 5)


def test_records_carry_the_trail_rates_are_computed_from_and_the_loss_log_every_step(tmp_path, monkeypatch):
    from saturn_airflow.control.rates import RateWindow, estimate
    from saturn_airflow.execution import runner
    from saturn_airflow.spec.progress import JobState, ProgressRecord

    now = [100.0]
    monkeypatch.setattr(runner.time, "time", lambda: now[0])
    log = tmp_path / "losses.jsonl"
    rep = runner.ProgressReporter(workload="w", job="j", plan_id="p", sweep="s", parallelism="ddp", device_ids=[0, 1],
                                  store_url=str(tmp_path), every_s=3.0, loss_log=str(log))
    rep.start(40, 400)  # resumed at step 40
    for i in range(1, 121):  # 0.1 s per step for the first 2 s (warm-up), then 0.05 s
        now[0] += 0.1 if i <= 20 else 0.05
        rep.update(40 + i, 1.0 / i)
    rec = ProgressRecord.parse(ProgressStore(Store(str(tmp_path)), sweep="s").get("w", "j"))
    assert rec.state == JobState.RUNNING and rec.start_step == 40 and rec.first_step_at == 100.0
    assert rec.trail[0][1] >= 40 and rec.trail[-1][0] <= rec.updated_at + 1e-3 and rec.pid == os.getpid()
    est = estimate(rec, RateWindow(warmup_s=2.0, window_s=3.0, window_steps=10))
    assert est.rate == pytest.approx(20.0, rel=0.05)  # the steady pace, not the warm-up's
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0]["start"] == 40 and lines[0]["plan_id"] == "p"
    assert [x["step"] for x in lines[1:]] == list(range(40, 160))  # every step, 0-based
    rep.fail(160, "RuntimeError: boom")
    assert ProgressStore(Store(str(tmp_path)), sweep="s").get("w", "j")["state"] == "interrupted"
