"""The planning DAG's steps: validate the workload, merge per-node profiles, stage and publish a plan.

Store layout used here:
  tables/<plan_id>.json         the profile table a plan was solved from (re-plans reuse the root's)
  staged/<plan_id>.json         a solved plan waiting for the publish step
"""

from __future__ import annotations

import json
from typing import Optional

from saturn_airflow.errors import NotFoundError, SaturnInputError
from saturn_airflow.spec.plan import Plan, check_plan, parse_plan
from saturn_airflow.spec.profile_table import ProfileTable, parse_profile_table
from saturn_airflow.store.records import PlanStore, Store

# Parallelisms that cannot run on fewer devices than this (a pipeline needs two stages); a registered
# parallelism class may declare its own `min_devices`.
MIN_DEVICES_FALLBACK = {"pipeline": 2}


def _min_devices(name: str) -> int:
    try:
        from saturn_airflow.parallelisms import get_parallelism  # may import torch

        cls = get_parallelism(name)
        value = getattr(cls, "min_devices", None)
        if value:
            return int(value)
    except Exception:
        pass
    return MIN_DEVICES_FALLBACK.get(name, 1)


def validate(workload_path: str):
    """Load and check a workload; SaturnInputError (one line, naming the job) when a job fits no node or
    names a model, data or loss factory that does not import."""
    from saturn_airflow.parallelisms.base import check_factories
    from saturn_airflow.spec.workload import load_workload

    if not workload_path:
        raise SaturnInputError("no workload given: set the 'workload' param to the path of a workload YAML file")
    wl = load_workload(workload_path)
    biggest = max(n.gpus for n in wl.cluster.nodes)
    for job in wl.jobs:
        pars = wl.parallelisms_for(job)
        need = {p: _min_devices(p) for p in pars}
        if all(k > biggest for k in need.values()):
            raise SaturnInputError(
                f"job {job.name!r} fits no node: its parallelisms ({', '.join(f'{p} needs >= {k} devices' for p, k in need.items())}) "
                f"exceed the largest node ({biggest} devices: "
                + ", ".join(f"{n.name}={n.gpus}" for n in wl.cluster.nodes) + ")")
        check_factories(job)
    return wl


def nodes_of(wl) -> list[dict]:
    return [{"name": n.name, "gpus": n.gpus, "gpu_type": n.gpu_type} for n in wl.cluster.nodes]


def merge_tables(tables: list[ProfileTable], cluster) -> ProfileTable:
    """Union of per-node profile tables (configs deduplicated by identity), over the workload's cluster."""
    jobs: dict[str, dict] = {}
    for t in tables:
        for j in t.jobs:
            entry = jobs.setdefault(j.name, {"name": j.name, "configs": {}})
            for c in j.configs:
                entry["configs"].setdefault(c.key(), c.model_dump(mode="json", exclude_none=True))
    data = {"cluster": cluster.model_dump(mode="json") if hasattr(cluster, "model_dump") else cluster,
            "jobs": [{"name": e["name"], "configs": list(e["configs"].values())} for e in jobs.values()]}
    return parse_profile_table(data, source="merged profile table")


def table_rel(plan_id: str) -> str:
    return f"tables/{plan_id}.json"


def stage(store: Store, plan: Plan, table: Optional[ProfileTable], table_ref: Optional[str] = None) -> None:
    """Keep a solved plan (and the table it came from) until the publish step."""
    if table is not None:
        store.write_json(table_rel(plan.plan_id), json.loads(table.to_json()))
        table_ref = table_rel(plan.plan_id)
    data = plan.model_dump(mode="json")
    data["table_ref"] = table_ref
    store.write_json(f"staged/{plan.plan_id}.json", data)


def staged(store: Store, plan_id: str) -> Plan:
    data = store.read_json(f"staged/{plan_id}.json")
    if data is None:
        raise NotFoundError(f"no staged plan {plan_id!r} in {store.url}")
    return parse_plan(data, source=f"staged plan {plan_id}")


def plan_table_of(store: Store, plan: Plan) -> ProfileTable:
    ref = (plan.model_extra or {}).get("table_ref") or table_rel(plan.plan_id)
    data = store.read_json(ref)
    if data is None:
        raise NotFoundError(f"the profile table of plan {plan.plan_id} ({ref}) is missing from {store.url}")
    return parse_profile_table(data, source=ref)


def publish(store: Store, plan_id: str, *, check: bool = True) -> Plan:
    """Publish a staged plan (a child supersedes its parent); idempotent for a retry of the same step."""
    plan = staged(store, plan_id)
    ps = PlanStore(store)
    if plan_id in ps.ids():
        return ps.get(plan_id)
    if check:
        table = plan_table_of(store, plan) if not plan.parent_plan_id else None
        if table is not None:
            check_plan(plan, table)
    return ps.publish(plan)  # with its sweep: its own id for a root, its parent's for a re-plan
