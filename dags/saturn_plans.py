"""The one factory file: one DAG per plan version in the PlanStore (`saturn_run__<plan_id>`).

Per job one training task (pool = its node's pool, pool_slots = its GPUs, queue = its node,
priority_weight from the schedule order, upstream = the plan's `after` with trigger_rule all_done),
plus the deferrable drift sensor, the re-plan trigger and the plan's result task (after every
training task; it fails the run, naming the job and the reason, when a job failed for good). A published plan's DAG starts by itself:
schedule "@once", start_date in the past, not paused on creation. Rendering reads plan JSON only
(no torch, no solving) and depends on nothing but the immutable plan, so a running DAG never changes.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import DAG

from saturn_airflow import settings
from saturn_airflow.operators.drift import SaturnDriftSensor, SaturnReplanTriggerOperator
from saturn_airflow.operators.training import SaturnPlanResultOperator, SaturnTrainOperator
from saturn_airflow.spec.plan import Plan
from saturn_airflow.tasks.render import DRIFT_TASK, REPLAN_TASK, RESULT_TASK, dag_id, doc_md, newest, task_specs
from saturn_airflow.store.records import PlanStore, Store

log = logging.getLogger(__name__)
START = pendulum.datetime(2024, 1, 1, tz="UTC")


def render(plan: Plan, store_url: str | None = None) -> DAG:
    """The DAG of one plan version."""
    specs = task_specs(plan)
    with DAG(
        dag_id=dag_id(plan.plan_id),
        description=f"saturn plan {plan.plan_id} ({plan.workload}): {len(specs)} jobs, planned {plan.makespan_s:.0f} s",
        schedule="@once",
        start_date=START,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["saturn", "saturn-plan", plan.workload],
        doc_md=doc_md(plan),
        default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=10)},
    ) as dag:
        tasks = {}
        for s in specs:
            tasks[s.task_id] = SaturnTrainOperator(
                task_id=s.task_id, plan_id=plan.plan_id, job=s.job, store_url=store_url, pool=s.pool,
                pool_slots=s.pool_slots, queue=s.queue, priority_weight=s.priority_weight, weight_rule="absolute",
                trigger_rule="all_done",
            )
        for s in specs:
            for up in s.upstream:
                tasks[up] >> tasks[s.task_id]
        list(tasks.values()) >> SaturnPlanResultOperator(task_id=RESULT_TASK, plan_id=plan.plan_id, store_url=store_url,
                                                         retries=0)
        watch = SaturnDriftSensor(task_id=DRIFT_TASK, plan_id=plan.plan_id, store_url=store_url, retries=2)
        watch >> SaturnReplanTriggerOperator(task_id=REPLAN_TASK, plan_id=plan.plan_id)
    return dag


def render_all(store_url: str | None = None) -> dict[str, DAG]:
    store = Store(store_url or settings.store_url())
    ps = PlanStore(store)
    out: dict[str, DAG] = {}
    for pid in newest(ps.ids(), settings.render_max_plans()):
        try:
            out[dag_id(pid)] = render(ps.get(pid), store_url)
        except Exception as e:  # one bad plan file must not hide the others
            log.warning("saturn: cannot render plan %s: %s", pid, e)
    return out


globals().update(render_all())
