"""Render benchmark: how long the factory file takes to render one DAG per plan (no torch, no solving).

    python bench/render_bench.py [--jobs 500] [--plans 1] [--repeat 5]

Prints the median time to parse the factory file (Airflow's cost per parse) for a plan of N jobs on
2 nodes x 8 GPUs, and whether torch/pyomo were imported. Target: a 500-job plan under 0.5 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

FACTORY = Path(__file__).resolve().parents[1] / "dags" / "saturn_plans.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--plans", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="saturn-render-")
    os.environ["SATURN_HOME"] = tmp
    from saturn_airflow.tasks.render import synthetic_plan
    from saturn_airflow.store.records import PlanStore, Store

    ps = PlanStore(Store(tmp))
    for i in range(args.plans):
        ps.publish(synthetic_plan(args.jobs, nodes=[("node0", 8), ("node1", 8)], plan_id=f"bench-v{i}", seed=i))
    t = time.perf_counter()
    import airflow.sdk  # noqa: F401  (Airflow itself is loaded once per dag-processor, not per parse)
    import saturn_airflow.operators.drift  # noqa: F401
    import saturn_airflow.operators.training  # noqa: F401
    imports = time.perf_counter() - t
    times = []
    for r in range(args.repeat):
        spec = importlib.util.spec_from_file_location(f"saturn_plans_{r}", FACTORY)
        mod = importlib.util.module_from_spec(spec)
        t = time.perf_counter()
        spec.loader.exec_module(mod)
        times.append(time.perf_counter() - t)
    n_tasks = sum(len(d.tasks) for d in mod.render_all().values())
    med = statistics.median(times)
    print(f"plans={args.plans} jobs/plan={args.jobs} tasks={n_tasks} parse median={med:.3f} s "
          f"min={min(times):.3f} s (imports once: {imports:.2f} s) torch={'torch' in sys.modules} "
          f"pyomo={'pyomo' in sys.modules} -> {'PASS' if med < 0.5 * args.plans else 'FAIL'} (< 0.5 s per 500-job plan)")


if __name__ == "__main__":
    main()
