"""Successive halving benchmark: one sweep run three ways on this machine's devices, side by side.

    .venv/bin/python bench/asha_bench.py [--jobs 12] [--steps 270] [--rungs 30,90] [--keep 0.333]
                                         [--order ours,ray,full,ray,ours] [--out bench/results/asha.json]
                                         [--resume] [--ablation]

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
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

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


def lrs(n: int, lo: float = 1e-4, hi: float = 3e-2) -> list[float]:
    """n learning rates, log-spaced over lo .. hi (the grid a practitioner would try)."""
    return [float(f"{lo * (hi / lo) ** (i / max(1, n - 1)):.3g}") for i in range(n)]


def workload(args, early: bool) -> dict:
    """One model, n learning rates, listed in a shuffled order (seed 0): Ray starts trials in this order."""
    rates = lrs(args.jobs)
    random.Random(args.order_seed).shuffle(rates)
    base = {"model": "saturn_airflow.examples.models:gpt",
            "model_args": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": 4, "vocab": 512, "seq_len": 32},
            "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 512},
            "batch_size": args.batch, "steps": args.steps}
    wl = {
        "name": "asha-bench",
        "cluster": {"nodes": [{"name": "local", "gpus": args.devices, "gpu_type": "cpu"}]},
        "parallelisms": ["single", "ddp"],
        "jobs": [{"name": f"gpt-lr{lr:g}", **base, "optimizer": {"name": "adamw", "lr": lr}} for lr in rates],
        # every way evaluates at the rungs (the full sweep too: its values replay the other rules)
        "evaluation": {"data_args": {"stream": 1}, "batches": 2, "metrics": ["loss"],
                       "every_steps": math.gcd(*args.rungs)},
    }
    if early:
        wl["early_stop"] = {"metric": "loss", "rungs": args.rungs, "keep": args.keep}
    return wl


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def outcome(way: str, store_url: str, sweep: str, wl, launches: list[Launch], t0: float, t1: float, **extra) -> dict:
    h = wl.halving()
    finals = segments.final_values(h, MetricsStore(Store(store_url), sweep=sweep).all(wl.name))
    done = [j for j, v in finals.items() if v is not None]
    win = policy.best(done, finals, h.goal)
    states: dict[str, int] = {}
    for ln in launches:
        states[ln.status] = states.get(ln.status, 0) + 1
    values = segments.rung_values(h, MetricsStore(Store(store_url), sweep=sweep).all(wl.name))
    return {"way": way, "wall_s": round(t1 - t0, 1), "device_s": round(sum(ln.device_s for ln in launches), 1),
            "launches": len(launches), "launch_states": states, "finished": sorted(done), "winner": win,
            "winner_value": finals.get(win), "finals": finals, "rung_values": values, **extra,
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
    return outcome("full", store_url, runner.plans[0].sweep, wl, runner.launches, t0, time.time(),
                   planned_s=round(plan.makespan_s, 1))


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
                          plan_id="ray", sweep="ray", log=lambda m: None, rung_gate="ray-asha")
            with lock:
                launches.append(Launch(job, "ray", res.status, [device], par, t, time.time(), res.step))
            print(f"  {time.strftime('%H:%M:%S')} {job}: {res.status} at step {res.step} (device {device}, "
                  f"{time.time() - t:.0f} s)", flush=True)

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(d,)) for d in range(args.devices)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return outcome("ray", store_url, "ray", wl, launches, t0, time.time())


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
    return outcome(way, store_url, runner.plans[0].sweep, wl, runner.launches, t0, time.time(),
                   replans=len(runner.plans) - 1,
                   replan_s=[round(s, 2) for s in runner.replan_s], first_plan_s=round(plan_s, 1),
                   planned_first_s=round(plan.makespan_s, 1), resized=resized)


def replay_ray(full: dict, wl, table, orders: int, seed: int = 1) -> dict:
    """Ray Tune's rule replayed over random trial orders on what the full sweep measured: each job's
    values at the rungs and its whole-run wall time (launch overhead, from the profile, paid once per
    trial). A model, not a run: it says how much the one real Ray run's order mattered."""
    h = wl.halving()
    vals = full["rung_values"]
    walls = {ln["job"]: ln["end_s"] - ln["start_s"] for ln in full["launch_log"] if ln["status"] == "done"}
    one = next(c for c in table.jobs[0].configs if c.gpus == 1)
    extra = (one.model_extra or {})
    launch = float(extra.get("startup_s") or 0) + float(extra.get("teardown_s") or 0)
    jobs = [j.name for j in wl.jobs]
    steps = {j.name: j.steps for j in wl.jobs}

    def once(order: list[str]) -> tuple[float, Optional[str]]:
        recorded: dict[int, list] = {r: [] for r in h.rungs}
        queue, active, end, finished = list(order), [], 0.0, []

        def start(job: str, t: float) -> list:
            train = max(1e-3, walls[job] - launch)
            return [t + launch + train * h.rungs[0] / steps[job], job, 0, t, train]

        for _ in range(args_devices(wl)):
            if queue:
                active.append(start(queue.pop(0), 0.0))
        while active:
            active.sort()
            t, job, ri, st, train = active.pop(0)
            if ri < len(h.rungs):
                r = h.rungs[ri]
                v = vals.get(job, {}).get(r)
                go = policy.ray_asha_continues(v, recorded[r], h.keep, h.goal)
                recorded[r].append(v)
                if go:
                    nxt = h.rungs[ri + 1] if ri + 1 < len(h.rungs) else steps[job]
                    active.append([t + train * (nxt - r) / steps[job], job, ri + 1, st, train])
                    continue
            else:
                finished.append(job)
            end = max(end, t)
            if queue:
                active.append(start(queue.pop(0), t))
        return end, policy.best(finished, full["finals"], h.goal)

    rng = random.Random(seed)
    spans, agree = [], 0
    for _ in range(orders):
        order = list(jobs)
        rng.shuffle(order)
        span, win = once(order)
        spans.append(span)
        agree += win == full["winner"]
    spans.sort()
    here, _ = once(jobs)
    pick = lambda q: round(spans[min(len(spans) - 1, int(q * len(spans)))], 1)  # noqa: E731
    return {"orders": orders, "wall_s_p10": pick(0.1), "wall_s_median": pick(0.5), "wall_s_p90": pick(0.9),
            "winner_agrees": round(agree / max(1, orders), 3), "this_order_s": round(here, 1),
            "launch_s": round(launch, 1)}


def args_devices(wl) -> int:
    return sum(n.gpus for n in wl.cluster.nodes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=270)
    ap.add_argument("--rungs", default="30,90", help="comma-separated steps")
    ap.add_argument("--keep", type=float, default=1 / 3)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--order-seed", type=int, default=0, help="shuffles the jobs' order (Ray starts trials in it)")
    ap.add_argument("--replays", type=int, default=200, help="trial orders for the Ray rule's replay")
    ap.add_argument("--order", default="ours,ray,full,ray,ours",
                    help="which ways, in this order (a way may repeat: the machine's load changes under the runs)")
    ap.add_argument("--ablation", action="store_true", help="also ours with every job on one device")
    ap.add_argument("--time-limit", type=float, default=10.0, help="solver limit of the first plans")
    ap.add_argument("--replan-time-limit", type=float, default=3.0)
    ap.add_argument("--restart-overhead-s", type=float, default=10.0)
    ap.add_argument("--profile-store", default=str(Path(tempfile.gettempdir()) / "asha-bench-profiles"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "asha.json"))
    ap.add_argument("--resume", action="store_true", help="keep the ways already measured in --out, run the others")
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
    if args.resume and os.path.exists(args.out):  # ways measured by an earlier invocation (same args)
        rows = json.loads(Path(args.out).read_text()).get("rows", [])
        print(f"# resuming: {[r['way'] for r in rows]} measured before", flush=True)

    watch_signals()
    ways = [w for w in args.order.split(",") if w] + (["ours-fixed"] if args.ablation else [])
    measured = [r["way"] for r in rows]
    for way in ways:
        if way in measured:
            measured.remove(way)
            continue
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
        save(args, table, rows, None)
        print(f"## {way}: wall {row['wall_s']:.0f} s, {row['device_s']:.0f} device-s, {row['launches']} launches, "
              f"winner {row['winner']} ({row['winner_value']})", flush=True)
    full = next((r for r in rows if r["way"] == "full"), None)
    replay = replay_ray(full, wl, table, args.replays) if full is not None and args.replays else None
    if replay:
        print(f"# Ray's rule replayed over {replay['orders']} random trial orders on the full sweep's values: wall "
              f"{replay['wall_s_p10']:.0f} / {replay['wall_s_median']:.0f} / {replay['wall_s_p90']:.0f} s (p10/median/p90), "
              f"winner agrees in {100 * replay['winner_agrees']:.0f}%; this run's order replays to "
              f"{replay['this_order_s']:.0f} s")
    print("\n| way | wall | device-seconds | launches | re-plans | resized | winner | agrees with full | load (1 min) before/after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        agree = "-" if full is None else ("yes" if r["winner"] == full["winner"] else "no")
        win = f"{r['winner']} ({r['winner_value']:.4f})" if r["winner_value"] is not None else "-"
        load = "/".join(u.split("load average:")[-1].split(",")[0].strip() for u in (r["uptime_before"], r["uptime_after"]))
        print(f"| {r['way']} | {r['wall_s']:.0f} s | {r['device_s']:.0f} | {r['launches']} | {r.get('replans', '-')} "
              f"| {', '.join(r.get('resized') or []) or '-'} | {win} | {agree} | {load} |")
    save(args, table, rows, replay)
    print(f"\nwritten {args.out}")
    return 0


def watch_signals() -> None:
    """A shared machine: log a SIGTERM/SIGHUP sent to this run and go on (Ctrl-C still stops it).
    A handler, not a blocked mask: the runners this process starts must still see their SIGTERMs."""
    def on_signal(signum, frame):
        print(f"# ignored signal {signum} at {time.strftime('%H:%M:%S')}", flush=True)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def save(args, table, rows: list[dict], replay: Optional[dict]) -> None:
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": vars(args),
           "table": json.loads(table.to_json()), "rows": rows, "ray_replay": replay}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
