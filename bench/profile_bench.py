"""Profiler benchmark: profile the example sweep, then run every job to completion under its profiled
config and compare predicted with measured runtime.

    .venv/bin/python bench/profile_bench.py [--workload saturn_airflow/examples/sweep.yaml] [--out bench-out.json]

Reports: profiling cost (s, and as a share of profiling + training), trials saved by the cache
(same-speed jobs deduplicated, a second profile from the persistent cache) and by pruning, and per
job predicted vs measured wall time (whole run_job: launch to exit) plus, because wall time on a
shared box is noisy, the step loop's process CPU time against steps x the trial's CPU seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saturn_airflow.execution.devices import available_devices  # noqa: E402
from saturn_airflow.execution.launch import run_job  # noqa: E402
from saturn_airflow.parallelisms import get_parallelism  # noqa: E402
from saturn_airflow.profiling.profiler import device_counts, profile_workload  # noqa: E402
from saturn_airflow.store.records import Store  # noqa: E402
from saturn_airflow.spec.workload import load_workload  # noqa: E402


def naive_trials(wl, n_dev: int) -> int:
    """Trials without cache or pruning: every job x parallelism x device count that passes static checks."""
    total = 0
    for j in wl.jobs:
        for p in wl.parallelisms_for(j):
            par = get_parallelism(p)
            total += sum(1 for n in device_counts(n_dev) if par.check(j, n) is None)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default=str(ROOT / "saturn_airflow/examples/sweep.yaml"))
    ap.add_argument("--out", default="profile_bench.json")
    ap.add_argument("--store", default=None, help="store folder (default: a fresh temporary one = cold cache)")
    ap.add_argument("--jobs", nargs="*", default=None, help="only these jobs")
    ap.add_argument("--every-config", action="store_true",
                    help="also run the first job of each profile under every other config of its table row")
    ap.add_argument("--strategy", choices=("guided", "full"), default=None,
                    help="profiling strategy (default: the profile_strategy setting)")
    ap.add_argument("--precision", type=float, default=None,
                    help="stop timing a trial once its step time is known to this fraction (0: always measure_s)")
    args = ap.parse_args()
    prof_kw = {"strategy": args.strategy}
    if args.precision is not None:
        prof_kw["precision"] = args.precision
    wl = load_workload(args.workload)
    devices = available_devices()
    store_dir = args.store or tempfile.mkdtemp(prefix="saturn-bench-")
    store = Store(store_dir)
    load0 = os.getloadavg()
    print(f"# {wl.name}: {len(wl.jobs)} jobs on devices {devices}, store {store_dir}, load {load0}", flush=True)

    t = time.time()
    table = profile_workload(wl, store=store, devices=devices, jobs=args.jobs, progress=lambda s: print(s, flush=True),
                             **prof_kw)
    cold_s = time.time() - t
    cold = table.profile_stats
    t = time.time()
    warm = profile_workload(wl, store=store, devices=devices, jobs=args.jobs, **prof_kw).profile_stats
    warm_s = time.time() - t
    naive = naive_trials(wl, len(devices))
    print(f"profile cold {cold_s:.1f}s ({cold['trials_run']} trials, {cold['launches']} launches), "
          f"warm {warm_s:.1f}s ({warm['trials_run']} trials, {warm['cache_hits']} cache hits); naive trials {naive}")

    def run_row(jp, cfg, kind: str) -> dict:
        ids = devices[:cfg.gpus]
        with tempfile.TemporaryDirectory() as run_store:
            r = run_job(wl, jp.name, parallelism=cfg.parallelism, knobs=cfg.knobs, device_ids=ids,
                        store_url=run_store, plan_id="bench", log=lambda s: None)
        res = r.details.get("result", {})
        steps = wl.job(jp.name).steps
        row = {"job": jp.name, "kind": kind, "parallelism": cfg.parallelism, "devices": cfg.gpus, "knobs": cfg.knobs,
               "status": r.status, "predicted_s": cfg.runtime_s, "measured_s": round(r.wall_s, 2),
               "err_wall": round(r.wall_s / cfg.runtime_s - 1, 4),
               "pred_loop_s": round(steps * cfg.step_s, 2), "loop_s": round(res.get("train_wall_s", 0.0), 2),
               "pred_loop_cpu_s": round(steps * cfg.step_cpu_s, 2), "loop_cpu_s": round(res.get("train_cpu_s", 0.0), 2),
               "startup_pred_s": cfg.startup_s}
        row["err_loop"] = round(row["loop_s"] / row["pred_loop_s"] - 1, 4) if row["pred_loop_s"] else None
        row["err_cpu"] = round(row["loop_cpu_s"] / row["pred_loop_cpu_s"] - 1, 4) if row["pred_loop_cpu_s"] else None
        print(json.dumps(row), flush=True)
        return row

    fastest = {jp.name: min(jp.configs, key=lambda c: c.runtime_s) for jp in table.jobs}
    rows = [run_row(jp, fastest[jp.name], "fastest") for jp in table.jobs]
    others = []
    if args.every_config:
        seen = set()
        for jp in table.jobs:
            key = fastest[jp.name].model_extra.get("profile_key")
            if key in seen:
                continue
            seen.add(key)
            others += [run_row(jp, c, "other") for c in jp.configs if c is not fastest[jp.name]]

    train_s = sum(r["measured_s"] for r in rows)
    # the box's own noise: jobs sharing a profile do identical work, so their spread is the noise floor
    by_key: dict = {}
    for jp, r in zip(table.jobs, rows):
        key = fastest[jp.name].model_extra.get("profile_key")
        by_key.setdefault(key, []).append(r["measured_s"])
    noise = [(max(v) - min(v)) / statistics.median(v) for v in by_key.values() if len(v) > 1]
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}", "load_avg_start": load0,
        "load_avg_end": os.getloadavg(), "devices": devices, "strategy": table.profile_stats.get("strategy"),
        "precision": args.precision,
        "profile": {"cold_s": round(cold_s, 1), "warm_s": round(warm_s, 1), "share_of_sweep": round(cold_s / (cold_s + train_s), 3),
                    "naive_trials": naive, "trials_run": cold["trials_run"], "confirm_trials": cold.get("confirm_trials", 0), "launches": cold["launches"],
                    "deduplicated_jobs": cold["deduplicated_jobs"], "pruned_oom": cold["pruned_oom"],
                    "skipped_by_bound": cold.get("skipped_by_bound", 0),
                    "pruned_dominated": cold["pruned_dominated"], "static_infeasible": cold["static_infeasible"],
                    "warm_trials_run": warm["trials_run"], "warm_cache_hits": warm["cache_hits"],
                    "trial_device_s": round(cold["trial_device_s"], 1), "trials": cold["trials"]},
        "jobs": rows, "other_configs": others, "train_total_s": round(train_s, 1),
        "median_abs_err_wall": statistics.median(abs(r["err_wall"]) for r in rows),
        "median_abs_err_cpu": statistics.median(abs(r["err_cpu"]) for r in rows if r["err_cpu"] is not None),
        "same_work_spread": [round(x, 3) for x in noise],
        "table": json.loads(table.to_json()),
    }
    if others:
        out["median_abs_err_wall_all_configs"] = statistics.median(abs(r["err_wall"]) for r in rows + others)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nprofiling {cold_s:.1f}s = {100 * out['profile']['share_of_sweep']:.0f}% of profile+train; "
          f"median |pred-meas|/pred: wall {100 * out['median_abs_err_wall']:.1f}%, loop CPU {100 * out['median_abs_err_cpu']:.1f}%; "
          f"spread of identical jobs' wall time (max-min)/median: {[f'{100 * x:.0f}%' for x in noise]}")
    if others:
        print(f"with {len(others)} other configs: median |pred-meas|/pred wall {100 * out['median_abs_err_wall_all_configs']:.1f}%")
    print("| job | config | predicted s | measured s | err | loop pred/meas s | loop CPU pred/meas s | err CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows + others:
        print(f"| {r['job']}{' (other config)' if r['kind'] == 'other' else ''} | {r['parallelism']} x{r['devices']} {r['knobs'] or ''} | {r['predicted_s']:.1f} | "
              f"{r['measured_s']:.1f} | {100 * r['err_wall']:+.1f}% | {r['pred_loop_s']:.1f} / {r['loop_s']:.1f} | "
              f"{r['pred_loop_cpu_s']:.1f} / {r['loop_cpu_s']:.1f} | {100 * (r['err_cpu'] or 0):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
