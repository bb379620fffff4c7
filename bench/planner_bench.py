"""Planner benchmark: makespan / lower bound, speedup over every baseline, and solve time, for CBC and HiGHS.

Families: (a) AdaptDL/Pollux measured traces, (b) Saturn-shaped 12 jobs on 8 GPUs, (c) scale:
100 and 500 jobs on 8 and 16 nodes; plus a synthetic 12-job family.

    .venv/bin/python bench/planner_bench.py            # full (about 15-20 min on 2 busy cores)
    .venv/bin/python bench/planner_bench.py --quick    # a few minutes, smaller limits
    ... --write docs/benchmarks-planner.md             # also write the markdown report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saturn_airflow.spec.plan import check_plan  # noqa: E402
from saturn_airflow.planner import BASELINES, plan_table  # noqa: E402
from saturn_airflow.planner.generate import adaptdl, saturn_shaped, synthetic  # noqa: E402

REFERENCE_SOLVERS = ("highs",)  # the 10x-time reference runs the default solver only (time budget)
ADAPTDL = Path(os.environ.get("SATURN_ADAPTDL", ROOT / "tests" / "data" / "adaptdl-osdi21"))


def instances(quick: bool):
    """(name, family, table, time limit, 10x reference?) per instance."""
    tl12 = 5.0 if quick else 30.0
    out = [
        ("b-saturn-12x8", "b", saturn_shaped(), tl12, not quick),
        ("s-synthetic-12x8", "s", synthetic(12, 8, seed=0), tl12, not quick),
    ]
    if ADAPTDL.is_dir():
        out += [
            ("a-adaptdl-12x8", "a", adaptdl(ADAPTDL, 12, 8, seed=0), tl12, not quick),
            ("a-adaptdl-32x2n", "a", adaptdl(ADAPTDL, 32, [8, 8], seed=1), 10.0 if quick else 30.0, False),
        ]
    out.append(("s-synthetic-32x2n", "s", synthetic(32, [8, 8], seed=1), 10.0 if quick else 30.0, False))
    out.append(("c-scale-100x8n", "c", synthetic(100, [8] * 8, seed=2), 20.0 if quick else 60.0, False))
    if not quick:
        out.append(("c-scale-500x16n", "c", synthetic(500, [8] * 16, seed=3), 120.0, False))
    return out


def run(quick: bool, solvers: list[str], only: str | None) -> list[dict]:
    rows = []
    for name, family, table, tl, reference in instances(quick):
        if only and only not in name:
            continue
        base = {}
        for b in BASELINES:
            p = plan_table(table, baseline=b, seed=0)
            check_plan(p, table)
            base[b] = p.makespan_s
        for solver in solvers:
            t0 = time.monotonic()
            p = plan_table(table, solver=solver, time_limit=tl, seed=0)
            wall = time.monotonic() - t0
            check_plan(p, table)
            milp = [r for r in p.solver.milp_runs if "termination" in r]
            row = {
                "instance": name, "family": family, "jobs": len(table.jobs), "nodes": len(table.cluster.nodes),
                "solver": solver, "time_limit_s": tl, "wall_s": round(wall, 1),
                "makespan_s": p.makespan_s, "lower_bound_s": p.lower_bound_s,
                "ratio_lb": p.makespan_s / p.lower_bound_s, "heuristic_s": p.solver.heuristic_makespan_s,
                "improved_over_warm_start": p.makespan_s < p.solver.heuristic_makespan_s - 1e-6,
                "final_from": p.solver.source,
                "milp": (f"{len(milp)} x {'/'.join(sorted({r['termination'] for r in milp}))}, "
                         f"<= {max(r['binaries'] for r in milp)} bin") if milp else "skipped",
                "speedup": {b: base[b] / p.makespan_s for b in BASELINES},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        mine = [r for r in rows if r["instance"] == name]
        if reference and min(r["ratio_lb"] for r in mine) > 1.02:  # within 2% of the bound needs no reference
            best = None
            for solver in REFERENCE_SOLVERS:
                p = plan_table(table, solver=solver, time_limit=10 * tl, seed=1)
                check_plan(p, table)
                best = p.makespan_s if best is None else min(best, p.makespan_s)
            for row in rows:
                if row["instance"] == name:
                    row["ratio_ref10x"] = row["makespan_s"] / min(best, row["makespan_s"])
            print(json.dumps({"instance": name, "reference_10x_s": best}), flush=True)
    return rows


def markdown(rows: list[dict], quick: bool, elapsed: float) -> str:
    machine = f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), " \
              f"Python {platform.python_version()}, shared with other jobs"
    head = ["instance", "jobs", "nodes", "solver", "limit s", "wall s", "makespan h", "/ LB", "/ best 10x",
            "warm start h", "final from", "MILP runs", "vs current", "vs max-h", "vs min-h", "vs optimus", "vs random"]
    lines = ["# Planner benchmark\n",
             f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine}. "
             f"Mode: {'quick' if quick else 'full'}; total {elapsed / 60:.1f} min. "
             f"Command: `.venv/bin/python bench/planner_bench.py{' --quick' if quick else ''}`.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sp = r["speedup"]
        ref = f"{r['ratio_ref10x']:.3f}" if "ratio_ref10x" in r else "-"
        lines.append("| " + " | ".join([
            r["instance"], str(r["jobs"]), str(r["nodes"]), r["solver"], f"{r['time_limit_s']:.0f}", f"{r['wall_s']:.1f}",
            f"{r['makespan_s'] / 3600:.2f}", f"{r['ratio_lb']:.3f}", ref, f"{r['heuristic_s'] / 3600:.2f}", re.sub(r"\(.*?\)", "", r["final_from"]), r["milp"],
            *(f"{sp[b]:.2f}x" for b in ("current-practice", "max-heuristic", "min-heuristic", "optimus-greedy", "random")),
        ]) + " |")
    return "\n".join(lines) + "\n"


def exact_sizes(seeds: int = 3, cap_s: float = 10.0) -> str:
    """How long the exact search takes to prove optimality, by job count and node size: random one-node
    tables of milp.md's family (every job distinct, 2-4 techniques, counts 1/2/3/4/6/8: up to 6 configs)."""
    import statistics

    from saturn_airflow.planner.bounds import instance_lower_bound
    from saturn_airflow.planner.exact import solve_exact
    from saturn_airflow.planner.heuristics import heuristic
    from saturn_airflow.planner.instance import build_instance

    lines = ["| jobs | GPUs | proven within " + f"{cap_s:.0f} s | median s | max s | median nodes |", "|---|---|---|---|---|---|"]
    for n in (4, 6, 7, 8, 9, 10, 12):
        for g in (2, 4, 8):
            times, nodes, proven = [], [], 0
            for seed in range(seeds):
                t = synthetic(n, g, seed=seed, counts=tuple(c for c in (1, 2, 3, 4, 6, 8) if c <= g))
                inst = build_instance(t)
                lb = instance_lower_bound(inst)
                t0 = time.monotonic()
                warm = heuristic(inst, lb, seed=seed, budget_s=0.05)
                r = solve_exact(inst, warm, time_limit=cap_s, node_budget=10**9, lower_bound=lb)
                took = time.monotonic() - t0
                proven += r.proven
                times.append(took if r.proven else float("inf"))
                nodes.append(r.nodes)
            fin = [x for x in times if x < float("inf")]
            lines.append(f"| {n} | {g} | {proven}/{seeds} | {statistics.median(times):.2f} | "
                         f"{max(fin) if fin else float('nan'):.2f} | {int(statistics.median(nodes))} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--solvers", default="highs,cbc")
    ap.add_argument("--only", help="run instances whose name contains this")
    ap.add_argument("--write", help="write the markdown table here")
    ap.add_argument("--json", help="write raw rows here")
    ap.add_argument("--exact-sizes", action="store_true", help="only: time to proven optimality by size")
    args = ap.parse_args()
    if args.exact_sizes:
        print(exact_sizes())
        return 0
    t0 = time.monotonic()
    rows = run(args.quick, args.solvers.split(","), args.only)
    md = markdown(rows, args.quick, time.monotonic() - t0)
    print(md)
    if args.write:
        Path(args.write).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
