"""Planning operators: validate -> ensure pools -> profile (per node) -> solve -> publish.

They only translate between Airflow and the engine (saturn_airflow.tasks / profiling / planner /
replan); all heavy work happens in execute(), never at parse time. Data between steps: small XComs
(paths, ids) and the store (tables, staged plans).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from saturn_airflow import settings

from saturn_airflow.tasks import planning as planning_steps
from saturn_airflow.tasks import pools
from saturn_airflow.errors import SaturnInputError
from saturn_airflow.store.records import PlanStore, Store


def _store(url: Optional[str]) -> Store:
    return Store(url or settings.store_url())


def _none(v: Any) -> Any:
    return None if v in (None, "", "None", "null") else v


class SaturnValidateOperator(BaseOperator):
    """Load and check the workload (a re-plan: the parent plan's workload); fail with the reason, no retry.

    Returns {workload_path, workload, nodes, replan_of, reason}.
    """

    template_fields = ("workload", "replan_of", "reason")
    ui_color = "#e8f0fe"

    def __init__(self, *, workload: Any = None, replan_of: Any = None, reason: Any = None,
                 store_url: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.workload, self.replan_of, self.reason, self.store_url = workload, replan_of, reason, store_url

    def execute(self, context):
        replan_of = _none(self.replan_of)
        path = _none(self.workload)
        if replan_of:
            ps = PlanStore(_store(self.store_url))
            try:
                parent = ps.get(replan_of)
            except KeyError as e:
                raise AirflowFailException(f"re-plan: {e}")
            path = (parent.model_extra or {}).get("workload_path") or path
            self.log.info("re-plan of %s (workload %s): %s", replan_of, path, _none(self.reason) or "drift")
        try:
            wl = planning_steps.validate(path)
        except SaturnInputError as e:
            self.log.error("workload rejected: %s", e)
            raise AirflowFailException(f"workload rejected: {e}") from None
        nodes = planning_steps.nodes_of(wl)
        served = settings.nodes()
        unserved = [n["name"] for n in nodes if served and n["name"] not in served]
        if unserved:
            raise AirflowFailException(f"workload rejected: node(s) {', '.join(unserved)} have no worker; this "
                                       f"deployment's nodes ([saturn] nodes) are {', '.join(served)}")
        self.log.info("workload %s: %d jobs on %s", wl.name, len(wl.jobs),
                      ", ".join(f"{n['name']} ({n['gpus']} devices)" for n in nodes))
        return {"workload_path": os.path.abspath(path), "workload": wl.name, "nodes": nodes,
                "replan_of": replan_of, "reason": _none(self.reason)}


class SaturnEnsurePoolsOperator(BaseOperator):
    """Make sure each node's pool exists with one slot per GPU (idempotent; resizes a pool that changed).

    Airflow 3 tasks may not touch the metadata DB, so this goes through the public REST API with the
    credentials of the `saturn_api` connection (host = the api-server URL, login/password of a user
    allowed to edit pools). Without that connection it tries `[api] base_url` unauthenticated (works
    with `simple_auth_manager_all_admins`). `AIRFLOW__SATURN__MANAGE_POOLS=false` skips this step for
    deployments that manage pools themselves (`airflow pools import`, Helm values...).
    Returns the nodes: the profile task is mapped over them.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, validate_task_id: str = "validate", conn_id: str = "saturn_api", **kwargs):
        super().__init__(**kwargs)
        self.validate_task_id, self.conn_id = validate_task_id, conn_id

    def _endpoint(self) -> tuple[str, Optional[str], Optional[str]]:
        from airflow.sdk import Connection

        try:
            c = Connection.get(self.conn_id)
        except Exception:
            c = None
        if c is not None and c.host:
            host = c.host if "://" in c.host else f"{c.schema or 'http'}://{c.host}"
            if c.port and host.count(":") < 2:
                host = f"{host}:{c.port}"
            return host, c.login, c.password
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback="http://localhost:8080"), None, None

    def execute(self, context):
        info = context["ti"].xcom_pull(task_ids=self.validate_task_id)
        if not settings.manage_pools():
            for p in pools.pool_specs(info["nodes"]):
                self.log.info("manage_pools is off: assuming pool %s exists with %d slots", p["name"], p["slots"])
            return info["nodes"]
        base, login, password = self._endpoint()
        self.log.info("ensuring pools through the Airflow API at %s%s", base, f" as {login}" if login else "")
        pools.ensure_pools_rest(base, info["nodes"], login=login, password=password, log=self.log.info)
        return info["nodes"]


class SaturnProfileOperator(BaseOperator):
    """Profile the workload on one node's devices (behind their leases); cached trials are not re-run.

    On one machine it is mapped over the workload's nodes (`.partial(...).expand(node=...)`). When
    workers serve nodes (`[saturn] nodes`), the planning DAG has one such task per node, `node` set to
    its name and `queue` to the node's queue, so node N is profiled by N's worker on N's devices; a
    node the workload does not use returns nothing. A re-plan profiles nothing: it reuses the root
    plan's table with observed rates.
    """

    ui_color = "#fef3e0"

    def __init__(self, *, node: Any = None, validate_task_id: str = "validate", store_url: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.node, self.validate_task_id, self.store_url = node, validate_task_id, store_url

    def execute(self, context):
        from saturn_airflow.execution import leases
        from saturn_airflow.spec.workload import load_workload

        from saturn_airflow.execution.devices import physical_ids

        info = context["ti"].xcom_pull(task_ids=self.validate_task_id)
        node = self.node or info["nodes"][0]
        if isinstance(node, str):  # one task per node of the cluster: this node, if the workload uses it
            node = next((n for n in info["nodes"] if n["name"] == node), None)
            if node is None:
                self.log.info("the workload does not use node %s: nothing to profile", self.node)
                return None
        if info.get("replan_of"):
            self.log.info("re-plan: profiling nothing; the planner uses the stored table and observed rates")
            return None
        here = settings.node()
        if here and here != node["name"]:
            raise AirflowFailException(f"the profile task of node {node['name']!r} ran on the worker of node {here!r}: "
                                       "start each node's worker with --queues <node> and [saturn] node=<node>")
        from saturn_airflow.profiling.profiler import profile_workload  # torch side; heavy import

        store = _store(self.store_url)
        wl = load_workload(info["workload_path"])
        plan_ids = list(range(int(node["gpus"])))
        devices = physical_ids(plan_ids, node["name"])
        keys = [leases.device_key(node["name"], d) for d in plan_ids]
        owner = {"job": f"profile:{wl.name}", "plan_id": None, "dag_run": context["run_id"], "node": node["name"],
                 "worker_node": here, "devices": devices}
        self.log.info("profiling on node %s, devices %s", node["name"], devices)
        with leases.acquire(store, keys, owner, timeout_s=settings.lease_timeout_s(), log=self.log.info):
            table = profile_workload(wl, store=store, devices=devices, progress=self.log.info)
        rel = f"runs/{_safe(context['run_id'])}/profile-{node['name']}.json"
        import json

        store.write_json(rel, json.loads(table.to_json()))
        self.log.info("profile table of node %s: %d jobs, %d configs -> %s", node["name"], len(table.jobs),
                      sum(len(j.configs) for j in table.jobs), rel)
        return rel


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


class SaturnSolveOperator(BaseOperator):
    """Solve the plan (a re-plan: the remaining work, claimed so only one re-plan per plan) and stage it."""

    template_fields = ("solver", "time_limit", "drift_threshold", "drift_min_s")
    ui_color = "#e6f4ea"

    def __init__(self, *, solver: Any = None, time_limit: Any = None, drift_threshold: Any = None,
                 drift_min_s: Any = None, validate_task_id: str = "validate", profile_task_id: str = "profile",
                 store_url: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.solver, self.time_limit = solver, time_limit
        self.drift_threshold, self.drift_min_s = drift_threshold, drift_min_s
        self.validate_task_id, self.profile_task_id, self.store_url = validate_task_id, profile_task_id, store_url

    def execute(self, context):
        from saturn_airflow.planner import plan_table
        from saturn_airflow.spec.plan import Plan
        from saturn_airflow.spec.profile_table import parse_profile_table
        from saturn_airflow.spec.workload import load_workload

        info = context["ti"].xcom_pull(task_ids=self.validate_task_id)
        store = _store(self.store_url)
        solver = _none(self.solver) or settings.solver()
        time_limit = float(_none(self.time_limit) or settings.time_limit())
        wl = load_workload(info["workload_path"])
        if info.get("replan_of"):
            return self._replan(context, info, store, wl, solver, time_limit)
        rels = context["ti"].xcom_pull(task_ids=self.profile_task_id)
        rels = [r for r in (rels if isinstance(rels, (list, tuple)) else [rels]) if r]
        tables = [parse_profile_table(store.read_json(r), source=r) for r in rels]
        table = planning_steps.merge_tables(tables, wl.cluster)
        self.log.info("solving %d jobs on %d nodes with %s (time limit %.0f s)", len(table.jobs),
                      len(table.cluster.nodes), solver, time_limit)
        halving = wl.halving()
        if halving is not None and halving.groups:  # successive halving: every job's first segment
            from saturn_airflow.tasks import rungs

            plan, plan_on = rungs.first_plan(store, table, halving, workload=wl.name, solver=solver,
                                             time_limit=time_limit, progress=self.log.info)
            self.log.info("successive halving: %d group(s), rungs %s, keep %s; the plan runs every job to its "
                          "first rung", len(halving.groups), halving.rungs, halving.keep)
        else:
            plan = plan_table(table, solver=solver, time_limit=time_limit, workload=wl.name, progress=self.log.info)
            plan_on = table
        drift = {"threshold": _float(self.drift_threshold), "min_s": _float(self.drift_min_s)}
        data = plan.model_dump(mode="json")
        data.update(workload_path=info["workload_path"], drift=drift, planning_run=context["run_id"])
        plan = Plan.model_validate(data)
        planning_steps.stage(store, plan, plan_on)
        self.log.info("plan %s: makespan %.1f s, lower bound %.1f s, solver %s %s", plan.plan_id, plan.makespan_s,
                      plan.lower_bound_s, plan.solver.name, plan.solver.status)
        return plan.plan_id

    def _replan(self, context, info, store, wl, solver, time_limit):
        from saturn_airflow.control import replan
        from saturn_airflow.store.records import ProgressStore

        ps = PlanStore(store)
        parent = ps.get(info["replan_of"])
        drift = (context.get("params") or {}).get("drift") or {}
        from saturn_airflow.control import segments

        if segments.section(parent) is not None:  # successive halving: plan the remaining segments
            from saturn_airflow.tasks import rungs

            kind = drift.get("kind") or "drift"
            res = rungs.replan_from_store(store, parent.plan_id, owner=context["run_id"], solver=solver,
                                          time_limit=min(time_limit, settings.rung_time_limit()) if kind == "rung"
                                          else time_limit, reason=info.get("reason") or kind, kind=kind,
                                          rates=drift.get("rates"), log=self.log.info)
            return self._stage_child(store, parent, res)
        table = planning_steps.plan_table_of(store, parent)
        steps = {j.name: j.steps for j in wl.jobs}
        res = replan.replan_from_store(
            ps, ProgressStore(store, sweep=parent.sweep), table, parent.plan_id, steps, owner=context["run_id"], solver=solver,
            time_limit=time_limit, restart_overhead_s=settings.restart_overhead_s(),
            min_gain=settings.min_preempt_gain(), reason=info.get("reason") or "drift",
            rates=drift.get("rates"), log=self.log.info)
        return self._stage_child(store, parent, res)

    def _stage_child(self, store, parent, res):
        self.log.info("%s", res.message)
        if res.plan is None:
            raise AirflowSkipException(res.message)
        planning_steps.stage(store, res.plan, None, table_ref=(parent.model_extra or {}).get("table_ref"))
        self.log.info("child plan %s: %d remaining jobs, makespan %.1f s", res.plan.plan_id,
                      len(res.plan.assignments), res.plan.makespan_s)
        return res.plan.plan_id


def _float(v: Any) -> Optional[float]:
    v = _none(v)
    return None if v is None else float(v)


class SaturnPublishOperator(BaseOperator):
    """Publish the staged plan to the PlanStore; its DAG (saturn_run__<plan_id>) then starts by itself."""

    ui_color = "#e6f4ea"

    def __init__(self, *, solve_task_id: str = "solve", store_url: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.solve_task_id, self.store_url = solve_task_id, store_url

    def execute(self, context):
        from saturn_airflow.tasks.render import dag_id

        plan_id = context["ti"].xcom_pull(task_ids=self.solve_task_id)
        if not plan_id:
            raise AirflowSkipException("nothing to publish")
        plan = planning_steps.publish(_store(self.store_url), plan_id)
        self.log.info("published plan %s%s; DAG %s starts once the dag-processor renders it", plan.plan_id,
                      f" (supersedes {plan.parent_plan_id})" if plan.parent_plan_id else "", dag_id(plan.plan_id))
        return {"plan_id": plan.plan_id, "dag_id": dag_id(plan.plan_id), "makespan_s": plan.makespan_s}
