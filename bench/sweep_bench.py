"""Sweep benchmark: the same sweep, through the same runner (run_job), on the same devices, one strategy
after another, each timed whole.

    .venv/bin/python bench/sweep_bench.py WORKLOAD [--strategies saturn,current,per-device,baselines]
                                                   [--rounds N] [--airflow] [--out f.json] [--md f.md]

WORKLOAD is a workload YAML, or `gen:SEED[:MINUTES]`: a sweep of three model shapes the project never saw
(drawn from SEED) x two learning rates, with steps set so that one device per job takes about MINUTES
(default 11) for the whole sweep on this machine; it is written to bench/workloads/gen-SEED.yaml first.

Strategies:
- saturn: profile (cold cache: a fresh store), solve, run the plan (each job when its `after` jobs end);
  wall time split into profiling / solving / training.
- saturn-airflow (--airflow): the same through a real Airflow scheduler (tests/e2e/airflow_harness.py):
  trigger `saturn_plan` to the last job done.
- current: current practice, executed: every job on all devices of the node, one after another, its
  fastest config at that device count (from saturn's profile table, whose cost is not charged here).
- per-device: one device per job, as many jobs at once as devices, in workload order, plain torch
  (parallelism `single`): what Ray Tune with fixed resources per trial does. No profiling.
- baselines: Saturn's other baselines (max-heuristic, min-heuristic, optimus-greedy) from the same table;
  a baseline whose plan is the same as one already run is reported as that one, not run again.
Rounds run the strategies in rotated order (round r starts at strategy r), so a change in the shared
machine's load falls on all of them; every row records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saturn_airflow import settings  # noqa: E402
from saturn_airflow.execution.devices import available_devices  # noqa: E402
from saturn_airflow.execution.launch import run_job  # noqa: E402
from saturn_airflow.planner import plan_table  # noqa: E402
from saturn_airflow.spec.plan import Plan  # noqa: E402
from saturn_airflow.spec.workload import load_workload  # noqa: E402

STRATEGIES = ("saturn", "current", "per-device", "baselines")
OTHER_BASELINES = ("max-heuristic", "min-heuristic", "optimus-greedy")
PORTS = range(18200, 18300)  # this bench's Airflow api-server ports


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------- generated sweeps
def _step_seconds(job: dict) -> float:
    """CPU seconds per training step of a job spec, one thread (median of 5 after 2 warm-up): CPU time,
    not wall time, so a busy machine does not shrink the generated sweep."""
    import torch

    from saturn_airflow.parallelisms.base import resolve

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = resolve(job["model"])(**job["model_args"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = resolve(job["data"])
    times = []
    for step in range(7):
        x, y = data(step, job["batch_size"], **job["data_args"])
        t0 = time.process_time()
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.process_time() - t0)
    return statistics.median(times[2:])


def generate(seed: int, minutes: float, n_devices: int) -> Path:
    """Three shapes (GPT or ViT, sizes drawn from `seed`) x two learning rates; steps so that the sweep
    takes about `minutes` with one job per device."""
    rng = random.Random(seed)
    jobs = []
    for i in range(3):
        if rng.random() < 0.6:
            d = rng.choice([96, 128, 160, 192])
            vocab, seq = rng.choice([1024, 2048, 4096]), rng.choice([32, 64, 96])
            job = {"name": f"gpt{i}-d{d}", "model": "saturn_airflow.examples.models:gpt",
                   "model_args": {"d_model": d, "n_layers": rng.randint(2, 5), "n_heads": rng.choice([2, 4]),
                                  "vocab": vocab, "seq_len": seq},
                   "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": seq, "vocab": vocab},
                   "batch_size": rng.choice([8, 16])}
        else:
            d = rng.choice([64, 96, 128])
            size = rng.choice([16, 32])
            job = {"name": f"vit{i}-d{d}", "model": "saturn_airflow.examples.models:vit",
                   "model_args": {"d_model": d, "n_layers": rng.randint(2, 5), "n_heads": rng.choice([2, 4]),
                                  "image_size": size, "patch": 4},
                   "data": "saturn_airflow.examples.data:images", "data_args": {"image_size": size},
                   "batch_size": rng.choice([16, 32])}
        job["optimizer"] = {"name": "adamw", "lr": 1.0e-3}
        jobs.append(job)
    # 6 jobs on n devices: each job about minutes * n / 6, varied by shape so the packing matters
    weights = [rng.uniform(0.6, 1.4) for _ in jobs]
    per_job = [60.0 * minutes * n_devices / 6 * w / (sum(weights) / len(weights)) for w in weights]
    for job, target in zip(jobs, per_job):
        step = _step_seconds(job)
        job["steps"] = max(50, int(round((target - 8.0) / step)))  # ~8 s of launch and teardown per job
        job["_calibrated"] = f"{step:.4f} CPU s/step"
    out = ROOT / "bench" / "workloads" / f"gen-{seed}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    lines = [f"# Generated by bench/sweep_bench.py gen:{seed}:{minutes:g} on {platform.node() or 'this machine'}: "
             "three shapes drawn from the seed x two learning rates.",
             "# Steps calibrated so one device per job takes about "
             f"{minutes:g} min for the sweep on {n_devices} devices: "
             + "; ".join(f"{j['name']} {j.pop('_calibrated')}" for j in jobs)]
    body = {"name": f"gen-{seed}", "jobs": jobs, "grid": {"optimizer.lr": [3.0e-4, 1.0e-3]}}
    out.write_text("\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False))
    return out


def workload_path(spec: str, n_devices: int) -> Path:
    if spec.startswith("gen:"):
        parts = spec.split(":")
        seed = int(parts[1])
        existing = ROOT / "bench" / "workloads" / f"gen-{seed}.yaml"
        if existing.exists() and len(parts) < 3:
            return existing
        return generate(seed, float(parts[2]) if len(parts) > 2 else 11.0, n_devices)
    return Path(spec).resolve()


# ---------------------------------------------------------------------------------- running jobs
@dataclass
class JobRun:
    job: str
    parallelism: str
    device_ids: list[int]
    start_s: float
    end_s: float
    status: str
    predicted_s: Optional[float] = None

    @property
    def wall_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Task:
    job: str
    parallelism: str
    knobs: dict
    device_ids: list[int]
    after: list[str] = field(default_factory=list)
    predicted_s: Optional[float] = None


_LAUNCHED: list = []  # every runner process this bench started, stopped at exit if still running


def _stop_launched() -> None:
    import signal

    for p in _LAUNCHED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _launch(wpath: str, task: Task, store: str, t0: float, done: "list", lock: threading.Lock,
            wake: threading.Event) -> threading.Thread:
    def work():
        start = time.time() - t0
        r = run_job(wpath, task.job, parallelism=task.parallelism, knobs=task.knobs, device_ids=task.device_ids,
                    store_url=store, plan_id="bench", log=lambda s: None, on_start=_LAUNCHED.append)
        end = time.time() - t0
        with lock:
            done.append(JobRun(task.job, task.parallelism, task.device_ids, start, end, r.status, task.predicted_s))
        if r.status != "done":
            log(f"  {task.job} {r.status}: {r.message}")
        wake.set()

    th = threading.Thread(target=work, daemon=True)
    th.start()
    return th


def run_tasks(wpath: str, tasks: list[Task], store: str, devices: list[int],
              dynamic: bool = False) -> tuple[list[JobRun], float]:
    """Run `tasks`: a plan's (each when its `after` jobs ended and its devices are free), or with
    `dynamic` a queue (each next task on the first free device, its device_ids ignored)."""
    t0 = time.time()
    done: list[JobRun] = []
    lock = threading.Lock()
    wake = threading.Event()
    started: set[str] = set()
    threads = []
    queue = list(tasks)
    while queue or len(done) < len(started):
        wake.clear()
        with lock:
            finished = {r.job for r in done}
        busy = {d for t in tasks if t.job in started and t.job not in finished for d in t.device_ids}
        for task in list(queue):
            if dynamic:  # strictly in order: the next task waits for a free device
                free = [d for d in devices if d not in busy]
                if not free:
                    break
                task.device_ids = free[:1]
            elif any(a not in finished for a in task.after) or set(task.device_ids) & busy:
                continue
            queue.remove(task)
            started.add(task.job)
            busy |= set(task.device_ids)
            log(f"  start {task.job}: {task.parallelism} on {task.device_ids}")
            threads.append(_launch(wpath, task, store, t0, done, lock, wake))
        with lock:
            pending = queue or len(done) < len(started)
        if pending:
            wake.wait(5.0)
    for th in threads:
        th.join()
    return sorted(done, key=lambda r: r.start_s), time.time() - t0


def plan_tasks(plan: Plan) -> list[Task]:
    return [Task(a.job, a.parallelism, dict(a.knobs), list(a.gpu_ids), list(a.after), a.runtime_s)
            for a in sorted(plan.assignments, key=lambda a: (a.start_s, a.job))]


def signature(plan: Plan) -> tuple:
    """What running a plan does: per job its config and devices, and the start order."""
    return tuple((a.job, a.parallelism, a.gpus, tuple(a.gpu_ids), tuple(sorted(a.after)))
                 for a in sorted(plan.assignments, key=lambda a: (a.start_s, a.job)))


# ---------------------------------------------------------------------------------- strategies
@dataclass
class Row:
    strategy: str
    round: int
    wall_s: float
    load_before: float
    load_after: float
    started_at: str
    profile_s: Optional[float] = None
    solve_s: Optional[float] = None
    train_s: Optional[float] = None
    planned_s: Optional[float] = None
    jobs: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    same_as: Optional[str] = None


def _errors(runs: list[JobRun]) -> list[float]:
    return [abs(r.wall_s - r.predicted_s) / r.wall_s for r in runs if r.predicted_s and r.status == "done"]


def fresh_store(tag: str) -> str:
    return tempfile.mkdtemp(prefix=f"sweep-bench-{tag}-")


def run_saturn(wl, wpath: str, devices: list[int], rnd: int) -> tuple[Row, Plan]:
    from saturn_airflow.profiling.profiler import profile_workload
    from saturn_airflow.store.files import Store

    store = fresh_store("saturn")
    load0, t0 = load_now(), time.time()
    at = time.strftime("%H:%M")
    table = profile_workload(wl, store=Store(store), devices=devices, progress=lambda s: log("  " + s))
    t1 = time.time()
    plan = plan_table(table, solver=settings.solver(), time_limit=settings.time_limit(), workload=wl.name)
    t2 = time.time()
    log(f"  saturn: profiled in {t1 - t0:.1f}s, solved in {t2 - t1:.2f}s ({plan.solver.status}, gap "
        f"{plan.solver.gap}), planned makespan {plan.makespan_s:.0f}s")
    runs, train = run_tasks(wpath, plan_tasks(plan), store, devices)
    wall = time.time() - t0
    st = table.profile_stats
    row = Row("saturn", rnd, wall, load0, load_now(), at, profile_s=t1 - t0, solve_s=t2 - t1, train_s=train,
              planned_s=plan.makespan_s, jobs=[asdict(r) for r in runs],
              notes={"profile_share": (t1 - t0) / wall, "trials_run": st["trials_run"],
                     "confirm_trials": st["confirm_trials"], "skipped_by_bound": st.get("skipped_by_bound", 0),
                     "solver_status": plan.solver.status, "gap": plan.solver.gap,
                     "configs": sorted({f"{a.parallelism} x{a.gpus}" for a in plan.assignments}),
                     "median_pred_err": statistics.median(_errors(runs)) if _errors(runs) else None})
    shutil.rmtree(store, ignore_errors=True)
    return row, plan


def run_plan_strategy(name: str, wl, wpath: str, plan: Plan, devices: list[int], rnd: int) -> Row:
    store = fresh_store(name)
    load0, at = load_now(), time.strftime("%H:%M")
    runs, wall = run_tasks(wpath, plan_tasks(plan), store, devices)
    shutil.rmtree(store, ignore_errors=True)
    return Row(name, rnd, wall, load0, load_now(), at, train_s=wall, planned_s=plan.makespan_s,
               jobs=[asdict(r) for r in runs],
               notes={"configs": sorted({f"{a.parallelism} x{a.gpus}" for a in plan.assignments}),
                      "median_pred_err": statistics.median(_errors(runs)) if _errors(runs) else None})


def run_per_device(wl, wpath: str, devices: list[int], rnd: int) -> Row:
    store = fresh_store("per-device")
    load0, at = load_now(), time.strftime("%H:%M")
    tasks = [Task(j.name, "single", {}, []) for j in wl.jobs]
    runs, wall = run_tasks(wpath, tasks, store, devices, dynamic=True)
    shutil.rmtree(store, ignore_errors=True)
    return Row("per-device", rnd, wall, load0, load_now(), at, train_s=wall, jobs=[asdict(r) for r in runs],
               notes={"configs": ["single x1"]})


def run_airflow(wpath: str, rnd: int) -> Row:
    """Trigger saturn_plan on a fresh Airflow (cold profile cache) and wait for the last job."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from airflow_harness import AirflowHarness

    from saturn_airflow.store.files import PlanStore, ProgressStore, Store

    port = next(p for p in PORTS if _port_free(p))
    # a shared, busy machine: the task runners' calls to the api-server get 60 s instead of 5 s
    af = AirflowHarness(home=tempfile.mkdtemp(prefix="sweep-bench-airflow-"), port=port, parallelism=8,
                        env={"AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60"})
    log(f"  starting Airflow on port {port} (home {af.home}); its start-up is not timed")
    af.start()
    ok = False
    try:
        af.wait_dag("saturn_plan")
        wl = load_workload(wpath)
        load0, at, t0 = load_now(), time.strftime("%H:%M"), time.time()
        run_id = af.trigger("saturn_plan", {"workload": str(wpath)})
        state = af.wait_run("saturn_plan", run_id, timeout_s=3600)
        if state != "success":
            raise RuntimeError(f"the planning run ended {state}; logs in {af.home} (kept)")
        tis = {t["task_id"]: t for t in af.task_instances("saturn_plan", run_id)}
        store = Store(af.saturn_home)
        plans = PlanStore(store)
        ids = plans.ids()
        if not ids:
            raise RuntimeError(f"the planning run succeeded but published no plan; logs in {af.home} (kept)")
        root = plans.get(sorted(ids)[0])
        progress = ProgressStore(store, sweep=root.sweep)
        deadline = time.time() + 4 * 3600
        while time.time() < deadline:
            recs = progress.all(wl.name)
            if len(recs) == len(wl.jobs) and all(r and r.get("state") in ("done", "failed") for r in recs.values()):
                break
            time.sleep(5)
        recs = progress.all(wl.name)
        end = max(float(r.get("finished_at") or time.time()) for r in recs.values())
        ids = plans.ids()

        def dur(task: str) -> Optional[float]:
            t = tis.get(task)
            if not t or not t.get("start_date") or not t.get("end_date"):
                return None
            from datetime import datetime

            return (datetime.fromisoformat(t["end_date"]) - datetime.fromisoformat(t["start_date"])).total_seconds()

        first = min(float(r.get("started_at") or end) for r in recs.values())
        row = Row("saturn-airflow", rnd, end - t0, load0, load_now(), at, profile_s=dur("profile"),
                  solve_s=dur("solve"), train_s=end - first, planned_s=root.makespan_s,
                  notes={"planning_run": state, "plans": len(ids), "replans": max(0, len(ids) - 1),
                         "trigger_to_first_job_s": first - t0,
                         "jobs_done": sum(1 for r in recs.values() if r.get("state") == "done")})
        ok = True
        return row
    finally:
        af.keep_home = not ok  # a failed run keeps its logs
        af.stop()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    rows = result["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return statistics.mean(vals) if vals else None

    sat = mean(r["wall_s"] for r in by.get("saturn", []))
    lines = [f"Workload `{result['workload']}` ({result['jobs']} jobs), {result['machine']}, "
             f"{result['date']}, {result['rounds']} round(s), command `{result['command']}`.", "",
             "| strategy | round | started (UTC) | load before/after | whole wall | profile | solve | training | "
             "planned | configs | vs saturn |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, unit="s"):
        return "-" if v is None else f"{v:.0f}{unit}" if v >= 10 else f"{v:.1f}{unit}"

    for r in rows:
        if r["notes"].get("error"):
            lines.append(f"| {r['strategy']} | {r['round']} | {r['started_at']} | - | failed: {r['notes']['error'][:80]} "
                         "| | | | | | |")
            continue
        if r.get("same_as"):
            lines.append(f"| {r['strategy']} | {r['round']} | - | - | same plan as {r['same_as']} | | | | | | |")
            continue
        ratio = "" if not sat else f"{sat / r['wall_s']:.2f}x"
        lines.append(f"| {r['strategy']} | {r['round']} | {r['started_at']} | {r['load_before']:.1f} / "
                     f"{r['load_after']:.1f} | {f(r['wall_s'])} | {f(r['profile_s'])} | {f(r['solve_s'])} | "
                     f"{f(r['train_s'])} | {f(r['planned_s'])} | {', '.join(r['notes'].get('configs', []))} | "
                     f"{ratio} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> dict:
    def mean(name):
        vals = [r.wall_s for r in rows if r.strategy == name and not r.same_as and not r.notes.get("error")]
        return statistics.mean(vals) if vals else None

    out = {k: mean(k) for k in ("saturn", "saturn-airflow", "current", "per-device", *OTHER_BASELINES)}
    rows = [r for r in rows if not r.notes.get("error")]
    if out["saturn"]:
        if out["current"]:
            out["saturn_vs_current"] = out["saturn"] / out["current"]
        if out["per-device"]:
            out["saturn_vs_per_device"] = out["saturn"] / out["per-device"]
    sat = [r for r in rows if r.strategy == "saturn"]
    if sat:
        out["profile_share"] = statistics.mean(r.notes["profile_share"] for r in sat)
        errs = [e for r in sat for e in _errors([JobRun(**j) for j in r.jobs])]
        out["median_pred_err_saturn"] = statistics.median(errs) if errs else None
    errs = [e for r in rows for e in _errors([JobRun(**j) for j in r.jobs])]
    out["median_pred_err_all"] = statistics.median(errs) if errs else None
    return out


def main() -> int:
    import signal

    import atexit

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops a running Airflow
    atexit.register(_stop_launched)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", help="workload YAML, or gen:SEED[:MINUTES]")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--airflow", action="store_true", help="also run saturn through a real Airflow scheduler")
    ap.add_argument("--out", default=None, help="raw rows (JSON); default bench/results/sweep_bench-<name>-<time>.json")
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    args = ap.parse_args()
    devices = available_devices()
    wpath = workload_path(args.workload, len(devices))
    wl = load_workload(wpath)
    names = [s for s in args.strategies.split(",") if s]
    if args.airflow:
        names.insert(1, "saturn-airflow")
    unknown = set(names) - set(STRATEGIES) - {"saturn-airflow"}
    if unknown:
        print(f"sweep_bench: unknown strategies {sorted(unknown)} (known: {', '.join(STRATEGIES)})", file=sys.stderr)
        return 2
    log(f"{wl.name}: {len(wl.jobs)} jobs on devices {devices}; strategies {names}; {args.rounds} round(s); "
        f"load {os.getloadavg()}")
    rows: list[Row] = []
    table = None
    reference: dict = {}
    t_all = time.time()
    out = Path(args.out or ROOT / "bench" / "results" /
               f"sweep_bench-{wl.name}-{time.strftime('%Y-%m-%d-%H%M', time.gmtime(t_all))}.json")
    if {"current", "baselines"} & set(names):
        from saturn_airflow.profiling.profiler import profile_workload
        from saturn_airflow.store.files import Store

        log("profiling every config once (strategy full, untimed): the table current practice and the "
            "baselines run from")
        store = fresh_store("ref")
        t = time.time()
        table = profile_workload(wl, store=Store(store), devices=devices, strategy="full",
                                 progress=lambda s: log("  " + s))
        shutil.rmtree(store, ignore_errors=True)
        full_plan = plan_table(table, workload=wl.name)
        reference = {"full_profile_s": time.time() - t, "full_profile_trials": table.profile_stats["trials_run"],
                     "full_profile_confirm_trials": table.profile_stats["confirm_trials"],
                     "saturn_planned_on_full_table_s": full_plan.makespan_s,
                     "configs": {jp.name: [f"{c.parallelism} x{c.gpus}: {c.runtime_s:.1f}s" for c in jp.configs]
                                 for jp in table.jobs},
                     "predicted_makespan_s": {b: plan_table(table, baseline=b, workload=wl.name).makespan_s
                                              for b in ("current-practice", *OTHER_BASELINES)}}
        log(f"  full profile {reference['full_profile_s']:.0f}s; saturn's plan on it: {full_plan.makespan_s:.0f}s")
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        ran: dict = {}
        for name in order:
            log(f"round {rnd}: {name}")
            try:
                run_strategy(name, rnd, wl, wpath, devices, table, rows, ran)
            except Exception as e:  # noqa: BLE001 - one broken strategy must not lose the others' rows
                import traceback

                traceback.print_exc()
                rows.append(Row(name, rnd, 0.0, load_now(), load_now(), time.strftime("%H:%M"),
                                notes={"error": f"{type(e).__name__}: {e}"}))
            r = rows[-1]
            log(f"round {rnd}: {r.strategy} took {r.wall_s:.1f}s (load {r.load_before} -> {r.load_after})")
            write_result(out, wpath, wl, devices, args, rows, reference, t_all)
    result = write_result(out, wpath, wl, devices, args, rows, reference, t_all)
    md = markdown(result)
    print(md)
    print(json.dumps(result["summary"], indent=1))
    if args.md:
        Path(args.md).write_text(md)
    log(f"raw rows: {out}")
    return 0


def write_result(out: Path, wpath: Path, wl, devices, args, rows, reference, t_all) -> dict:
    result = {
        "workload": str(wpath.relative_to(ROOT)) if wpath.is_relative_to(ROOT) else str(wpath),
        "jobs": len(wl.jobs), "devices": devices, "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_all)),
        "command": "bench/sweep_bench.py " + " ".join(sys.argv[1:]),
        "rows": [asdict(r) for r in rows], "summary": summary(rows), "reference": reference,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    out.write_text(json.dumps(result, indent=1))
    return result


def run_strategy(name: str, rnd: int, wl, wpath: Path, devices: list[int], table, rows: list,
                 ran: dict) -> None:
    """Run one strategy; `ran` maps the signature of each plan run this round to its strategy, so a
    baseline whose plan is one already run is listed as that one instead of run again."""
    if name == "saturn":
        row, plan = run_saturn(wl, str(wpath), devices, rnd)
        ran.setdefault(signature(plan), "saturn")
        rows.append(row)
    elif name == "saturn-airflow":
        rows.append(run_airflow(str(wpath), rnd))
    elif name == "current":
        plan = plan_table(table, baseline="current-practice", workload=wl.name)
        rows.append(run_plan_strategy("current", wl, str(wpath), plan, devices, rnd))
    elif name == "per-device":
        rows.append(run_per_device(wl, str(wpath), devices, rnd))
    elif name == "baselines":
        ran.setdefault(signature(plan_table(table, baseline="current-practice", workload=wl.name)), "current")
        for b in OTHER_BASELINES:
            plan = plan_table(table, baseline=b, workload=wl.name)
            sig = signature(plan)
            if sig in ran:
                rows.append(Row(b, rnd, 0.0, load_now(), load_now(), time.strftime("%H:%M"),
                                planned_s=plan.makespan_s, same_as=ran[sig]))
                log(f"  {b}: same plan as {ran[sig]}")
                continue
            ran[sig] = b
            rows.append(run_plan_strategy(b, wl, str(wpath), plan, devices, rnd))


if __name__ == "__main__":
    sys.exit(main())
