"""A hand-made plan lineage (v1 -> re-plan v2) and progress records for the UI tests."""

from __future__ import annotations

from saturn_airflow.spec.plan import Assignment, Plan, SolverInfo, fill_after

T0 = 1_800_000_000.0  # epoch seconds the first job of v1 started


def _plan(plan_id, rows, parent=None, reason=None, lb=100.0, created="2027-01-15T08:00:00+00:00"):
    asg = [Assignment(job=j, parallelism=par, gpus=len(ids), node=node, gpu_ids=ids, start_s=s, end_s=e)
           for j, par, node, ids, s, e in rows]
    fill_after(asg)
    extra = {"reason": reason} if reason else {}
    return Plan(plan_id=plan_id, workload="demo", parent_plan_id=parent, created_at=created,
                makespan_s=max(a.end_s for a in asg), lower_bound_s=lb,
                solver=SolverInfo(name="highs", status="optimal", time_s=0.5, gap=0.0), assignments=asg, **extra)


SWEEP = "demo-v1"  # the root plan of the lineage below


def lineage():
    v1 = _plan("demo-v1", [
        ("a", "fsdp", "node0", [0, 1, 2, 3], 0.0, 60.0),
        ("b", "ddp", "node0", [0, 1], 60.0, 120.0),
        ("c", "single", "node0", [2], 60.0, 100.0),
        ("d", "single", "node0", [3], 60.0, 110.0),
        ("e", "ddp", "node1", [0, 1], 0.0, 90.0),
        ("f", "pipeline", "node1", [0, 1], 90.0, 130.0),
    ])
    v2 = _plan("demo-v2", [
        ("b", "ddp", "node0", [0, 1], 0.0, 50.0),
        ("c", "single", "node0", [2], 0.0, 30.0),
        ("d", "single", "node0", [3], 0.0, 40.0),
        ("f", "ddp", "node1", [0, 1], 0.0, 35.0),
    ], parent="demo-v1", reason="job a ran 40% slower than profiled", lb=40.0, created="2027-01-15T08:01:30+00:00")
    return [v1, v2]


def progress():
    """v1's a and e done; v2 running b, c done, d failed, f not started."""
    def rec(plan, job, state, start, end=None, step=100, total=100, rate=2.0, ids=None):
        r = {"plan_id": plan, "job": job, "workload": "demo", "state": state, "step": step, "total": total,
             "rate_steps_per_s": rate, "started_at": T0 + start, "updated_at": T0 + (end or start + 5),
             "finished_at": (T0 + end) if end is not None and state != "running" else None,
             "parallelism": "ddp", "device_ids": ids}
        return r
    return {
        "a": rec("demo-v1", "a", "done", 0, 84, ids=[0, 1, 2, 3]),
        "e": rec("demo-v1", "e", "done", 1, 80, ids=[0, 1]),
        "b": rec("demo-v2", "b", "running", 90, None, step=40, total=100, rate=1.0, ids=[0, 1]),
        "c": rec("demo-v2", "c", "done", 90, 118, ids=[2]),
        "d": rec("demo-v2", "d", "failed", 91, 100, step=10, ids=[3]),
    }


def table():
    """A profile table over the sample's cluster (node0: 4 GPUs, node1: 2), for baselines and lanes."""
    from saturn_airflow.spec.profile_table import parse_profile_table

    jobs = []
    for name, base in zip("abcdef", (240, 120, 40, 50, 180, 80)):
        configs = [{"parallelism": "ddp", "gpus": g, "runtime_s": base / g * 1.1 if g > 1 else base} for g in (1, 2, 4)]
        jobs.append({"name": name, "configs": configs})
    return parse_profile_table({"cluster": {"nodes": [{"name": "node0", "gpus": 4}, {"name": "node1", "gpus": 2}]},
                                "jobs": jobs})


def publish(store_url: str, with_table: bool = True):
    """The sample lineage, its progress records and (optionally) its profile table in a store."""
    import json

    from saturn_airflow.store.records import PlanStore, ProgressStore, Store

    st = Store(store_url)
    plans = lineage()
    if with_table:
        st.write_json("tables/demo-v1.json", json.loads(table().to_json()))
        plans = [p.model_copy(update={}) for p in plans]
        for p in plans:
            p.__pydantic_extra__["table_ref"] = "tables/demo-v1.json"
    for p in plans:
        PlanStore(st).publish(p)
    for job, rec in progress().items():
        ProgressStore(st, sweep=SWEEP).put("demo", job, rec)
    return st


def publish_results(store_url: str):
    """Held-out results for the sample's jobs (loss, lower is better): c is the best finished job, b (still
    running) is better still but cannot win, d failed without an evaluation, f has not started."""
    from saturn_airflow.spec.workload import parse_workload
    from saturn_airflow.store.files import Store
    from saturn_airflow.store.metrics import MetricsStore

    wl = parse_workload({"name": "demo", "cluster": {"nodes": [{"name": "node0", "gpus": 4}]},
                         "evaluation": {"metrics": ["loss", "accuracy"], "every_steps": 50},
                         "jobs": [{"name": j, "model": "saturn_airflow.examples.models:gpt",
                                   "data": "saturn_airflow.examples.data:tokens", "batch_size": 8, "steps": 100,
                                   "optimizer": {"lr": lr}} for j, lr in zip("abcdef", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2))]})
    ms = MetricsStore(Store(store_url), sweep=SWEEP)
    curves = {"a": [2.0, 1.6], "e": [2.2, 1.9], "c": [1.8, 1.2], "b": [1.1]}
    for job in wl.jobs:
        if job.name == "f":
            continue
        ms.start_attempt("demo", job, plan_id="demo-v1", parallelism="ddp", device_ids=[0, 1], start_step=0)
        for k, loss in enumerate(curves.get(job.name, []), 1):
            ms.add_point("demo", job.name, 50 * k, {"loss": loss, "accuracy": 1 - loss / 3}, plan_id="demo-v1")
    return wl
