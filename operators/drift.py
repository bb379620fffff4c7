"""The drift sensor (deferrable, never reschedule mode: apache/airflow#71172) and the re-plan trigger task.

`SaturnDriftSensor` starts with its plan's DAG run, defers to `DriftTrigger` and returns the trigger's
event (kind drift | done | superseded) as its XCom. `SaturnReplanTriggerOperator` then starts a run of
the planning DAG with the observed state in its conf when the kind is drift, and skips otherwise. Its
run id is derived from the plan id, so one plan can never start two re-plan runs.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Optional

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

from saturn_airflow import settings

from saturn_airflow.tasks import drift as drift_steps
from saturn_airflow.tasks.render import PLANNING_DAG_ID

from .triggers import DriftTrigger


class SaturnDriftSensor(BaseSensorOperator):
    """Watch a plan's progress against the plan; end on drift, on completion or when superseded."""

    ui_color = "#fce8e6"

    def __init__(self, *, plan_id: str, store_url: Optional[str] = None, poll_s: Optional[float] = None,
                 threshold: Optional[float] = None, min_s: Optional[float] = None, **kwargs):
        kwargs.setdefault("timeout", timedelta(days=7).total_seconds())
        super().__init__(**kwargs)
        self.plan_id, self.store_url, self.poll_s = plan_id, store_url, poll_s
        self.threshold, self.min_s = threshold, min_s

    def _t0(self, context) -> float:
        dr = context.get("dag_run")
        start = getattr(dr, "start_date", None) if dr is not None else None
        return start.timestamp() if start is not None else time.time()

    def poke(self, context) -> bool:  # used only if someone runs it non-deferred
        event = drift_steps.drift_step(self.store_url or settings.store_url(), self.plan_id, self._t0(context),
                                       threshold=self.threshold, min_s=self.min_s,
                                       max_replans=settings.max_replans())
        return event is not None

    def execute(self, context) -> Any:
        t0 = self._t0(context)
        store_url = self.store_url or settings.store_url()
        self.log.info("deferring the drift watch of plan %s (plan start %.0f)", self.plan_id, t0)
        self.defer(
            trigger=DriftTrigger(plan_id=self.plan_id, store_url=store_url, t0=t0,
                                 poll_s=self.poll_s or settings.drift_poll_s(), threshold=self.threshold,
                                 min_s=self.min_s, max_replans=settings.max_replans()),
            method_name="execute_complete", timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: Optional[dict] = None) -> dict:
        event = event or {}
        self.log.info("drift watch of %s: %s: %s", self.plan_id, event.get("kind"), event.get("message"))
        return event


class SaturnReplanTriggerOperator(TriggerDagRunOperator):
    """Start the planning DAG for a re-plan when the drift sensor says so; skip otherwise."""

    def __init__(self, *, plan_id: str, sensor_task_id: str = "drift_watch", **kwargs):
        kwargs.setdefault("trigger_dag_id", PLANNING_DAG_ID)
        kwargs.setdefault("trigger_run_id", f"replan__{plan_id}")
        kwargs.setdefault("skip_when_already_exists", True)
        super().__init__(**kwargs)
        self.plan_id, self.sensor_task_id = plan_id, sensor_task_id

    def execute(self, context):
        event = context["ti"].xcom_pull(task_ids=self.sensor_task_id) or {}
        if event.get("kind") != "drift":
            raise AirflowSkipException(f"no re-plan: {event.get('kind') or 'no event'}: {event.get('message', '')}")
        self.conf = drift_steps.replan_conf(event)
        self.log.info("triggering %s for a re-plan of %s: %s", self.trigger_dag_id, self.plan_id, event.get("reason"))
        return super().execute(context)
