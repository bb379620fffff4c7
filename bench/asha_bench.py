"""Successive halving benchmark: one sweep run three ways on this machine's devices, side by side.

    .venv/bin/python bench/asha_bench.py [--jobs 12] [--steps 400] [--rungs 25,50,100,200] [--keep 0.5]
                                         [--order ours,ray,full] [--out bench/results/asha.json] [--ablation]

  full  every job to the end: our planner's plan of the whole sweep, no early stopping;
  ray   asynchronous successive halving as Ray Tune runs it (ASHAScheduler's rule, decided inside each
        job at its rungs): every trial gets one device and keeps it, trials start in order as devices
        free up, a survivor never gets the devices a stopped trial left;
  ours  successive halving inside the plan: every job's first segment planned up to its first rung,
        losers stopped at their checkpoint, and each rung re-plan giving the freed devices to the
        survivors (resumed under another parallelism and device count when that shortens the sweep).
  --ablation adds "ours-fixed": ours with every job kept on one device (what re-apportioning adds).

Each way trains the same jobs (real torch, one core per device, gloo) from the same profile table
(profiled once, cached), in a fresh store. Reported per way: whole wall time (first launch to last
end, re-plans included), device-seconds used, launches, re-plans, and the winner (best held-out
metric at the last step among the jobs that finished) with its value. `uptime` before and after
each run goes with the numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from plan_runner import Launch, PlanRunner  # noqa: E402
from saturn_airflow.control import early_stop as policy  # noqa: E402
from saturn_airflow.control import segments  # noqa: E402
from saturn_airflow.execution.launch import run_job  # noqa: E402
from saturn_airflow.spec.workload import load_workload  # noqa: E402
from saturn_airflow.store.files import Store  # noqa: E402
from saturn_airflow.store.metrics import MetricsStore  # noqa: E402


def lrs(n: int) -> list[float]:
    """n learning rates, log-spaced over 3e-4 .. 3e-2 (the grid a practitioner would try)."""
    lo, hi = 3e-4, 3e-2
    return [float(f"{lo * (hi / lo) ** (i / max(1, n - 1)):.3g}") for i in range(n)]


def workload(args, early: bool) -> dict:
    wl = {
        "name": "asha-bench",
        "cluster": {"nodes": [{"name": "local", "gpus": args.devices, "gpu_type": "cpu"}]},
        "parallelisms": ["single", "ddp"],
        "jobs": [{
            "name": "gpt", "model": "saturn_airflow.examples.models:gpt",
            "model_args": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": 4, "vocab": 512, "seq_len": 32},
            "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 512},
            "batch_size": args.batch, "steps": args.steps, "optimizer": {"name": "adamw", "lr": 1e-3},
        }],
        "grid": {"optimizer.lr": lrs(args.jobs)},
        "evaluation": {"data_args": {"stream": 1}, "batches": 2, "metrics": ["loss"]},
    }
    if early:
        wl["early_stop"] = {"metric": "loss", "rungs": args.rungs, "keep": args.keep}
    return wl


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def outcome(way: str, store_url: str, wl, launches: list[Launch], t0: float, t1: float, **extra) -> dict:
    h = wl.halving()
    finals = segments.final_values(h, MetricsStore(Store(store_url)).all(wl.name))
    done = [j for j, v in finals.items() if v is not None]
    win = policy.best(done, finals, h.goal)
    states: dict[str, int] = {}
    for ln in launches:
        states[ln.status] = states.get(ln.status, 0) + 1
    return {"way": way, "wall_s": round(t1 - t0, 1), "device_s": round(sum(ln.device_s for ln in launches), 1),
            "launches": len(launches), "launch_states": states, "finished": sorted(done), "winner": win,
            "winner_value": finals.get(win), "finals": finals, **extra,
            "launch_log": [dataclasses_dict(ln, t0) for ln in launches]}


def dataclasses_dict(ln: Launch, t0: float) -> dict:
    return {"job": ln.job, "status": ln.status, "devices": ln.devices, "parallelism": ln.parallelism,
            "start_s": round(ln.start - t0, 2), "end_s": round(ln.end - t0, 2), "step": ln.step}


def run_full(args, table, wl_path, wl) -> dict:
    from saturn_airflow.planner import plan_table

    store_url = tempfile.mkdtemp(prefix="asha-full-")
    plan = plan_table(table, solver="highs", time_limit=args.time_limit, workload=wl.name)
    runner = PlanRunner(store_url, wl_path, log=print)
    t0 = time.time()
    runner.run(plan, early_stop=False)
    return outcome("full", store_url, wl, runner.launches, t0, time.time(), planned_s=round(plan.makespan_s, 1))


def run_ray(args, table, wl_path, wl) -> dict:
    """Ray Tune's way: trials in order, one device each for their whole life, ASHA decided in-process."""
    store_url = tempfile.mkdtemp(prefix="asha-ray-")
    queue = [j.name for j in wl.jobs]
    lock = threading.Lock()
    launches: list[Launch] = []
    single = {c.gpus: c for c in table.job(queue[0]).configs}
    par = single[1].parallelism if 1 in single else "single"

    def worker(device: int):
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            t = time.time()
            res = run_job(wl_path, job, parallelism=par, knobs={}, device_ids=[device], store_url=store_url,
                          plan_id="ray", log=lambda m: None, rung_gate="ray-asha")
            with lock:
                launches.append(Launch(job, "ray", res.status, [device], par, t, time.time(), res.step))
            print(f"  {time.strftime('%H:%M:%S')} {job}: {res.status} at step {res.step} (device {device}, "
                  f"{time.time() - t:.0f} s)", flush=True)

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(d,)) for d in range(args.devices)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return outcome("ray", store_url, wl, launches, t0, time.time())


def run_ours(args, table, wl_path, wl, way="ours", one_device=False) -> dict:
    from saturn_airflow.tasks import rungs

    store_url = tempfile.mkdtemp(prefix=f"asha-{way}-")
    store = Store(store_url)
    if one_device:
        from saturn_airflow.spec.profile_table import JobProfile, ProfileTable

        table = ProfileTable(cluster=table.cluster, jobs=[
            JobProfile(name=j.name, configs=[c for c in j.configs if c.gpus == 1]) for j in table.jobs])
    t_plan = time.time()
    plan, _ = rungs.first_plan(store, table, wl.halving(), workload=wl.name, solver="highs", time_limit=args.time_limit)
    plan_s = time.time() - t_plan
    runner = PlanRunner(store_url, wl_path, log=print, replan_time_limit=args.replan_time_limit,
                        restart_overhead_s=args.restart_overhead_s)
    t0 = time.time()
    runner.run(plan, early_stop=True)
    resized = sorted({ln.job for ln in runner.launches if len(ln.devices) > 1})
    return outcome(way, store_url, wl, runner.launches, t0, time.time(), replans=len(runner.plans) - 1,
                   replan_s=[round(s, 2) for s in runner.replan_s], first_plan_s=round(plan_s, 1),
                   planned_first_s=round(plan.makespan_s, 1), resized=resized)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rungs", default="25,50,100,200", help="comma-separated steps")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--order", default="ours,ray,full", help="which ways, in this order")
    ap.add_argument("--ablation", action="store_true", help="also ours with every job on one device")
    ap.add_argument("--time-limit", type=float, default=10.0, help="solver limit of the first plans")
    ap.add_argument("--replan-time-limit", type=float, default=3.0)
    ap.add_argument("--restart-overhead-s", type=float, default=10.0)
    ap.add_argument("--profile-store", default=str(Path(tempfile.gettempdir()) / "asha-bench-profiles"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "asha.json"))
    args = ap.parse_args()
    args.rungs = [int(r) for r in args.rungs.split(",") if r]
    folder = tempfile.mkdtemp(prefix="asha-bench-")
    paths = {}
    for early in (True, False):
        p = Path(folder) / f"workload-{'sh' if early else 'full'}.yaml"
        p.write_text(yaml.safe_dump(workload(args, early), sort_keys=False))
        paths[early] = str(p)
    wl = load_workload(paths[True])
    from saturn_airflow.profiling.profiler import profile_workload

    t = time.time()
    table = profile_workload(load_workload(paths[False]), store=Store(args.profile_store), devices=list(range(args.devices)),
                             progress=lambda s: print(s, flush=True))
    print(f"# profile table in {time.time() - t:.0f} s: "
          + "; ".join(f"{c.parallelism} x{c.gpus} {c.runtime_s:.0f} s" for c in table.jobs[0].configs), flush=True)
    print(f"# {len(wl.jobs)} jobs x {args.steps} steps, rungs {args.rungs}, keep {args.keep}, quotas "
          f"{policy.quotas(len(wl.jobs), args.keep, len(args.rungs))}", flush=True)
    rows = []
    ways = [w for w in args.order.split(",") if w] + (["ours-fixed"] if args.ablation else [])
    for way in ways:
        before = uptime()
        print(f"## {way} ({before})", flush=True)
        if way == "full":
            row = run_full(args, table, paths[False], wl)
        elif way == "ray":
            row = run_ray(args, table, paths[True], wl)
        elif way == "ours":
            row = run_ours(args, table, paths[True], wl)
        elif way == "ours-fixed":
            row = run_ours(args, table, paths[True], wl, way="ours-fixed", one_device=True)
        else:
            raise SystemExit(f"unknown way {way!r}")
        row.update(uptime_before=before, uptime_after=uptime())
        rows.append(row)
        print(f"## {way}: wall {row['wall_s']:.0f} s, {row['device_s']:.0f} device-s, {row['launches']} launches, "
              f"winner {row['winner']} ({row['winner_value']})", flush=True)
    full = next((r for r in rows if r["way"] == "full"), None)
    print("\n| way | wall | device-seconds | launches | re-plans | winner | agrees with full |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        agree = "-" if full is None else ("yes" if r["winner"] == full["winner"] else "no")
        print(f"| {r['way']} | {r['wall_s']:.0f} s | {r['device_s']:.0f} | {r['launches']} | {r.get('replans', '-')} "
              f"| {r['winner']} ({r['winner_value']:.4f}) | {agree} |" if r["winner_value"] is not None else
              f"| {r['way']} | {r['wall_s']:.0f} s | {r['device_s']:.0f} | {r['launches']} | {r.get('replans', '-')} | - | - |")
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": vars(args),
           "table": json.loads(table.to_json()), "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
