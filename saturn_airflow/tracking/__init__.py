"""Mirrors of a sweep's results in external experiment trackers (MLflow), off unless a setting turns one on.

The store stays the source of truth; a tracker is written to alongside it and never decides anything.
"""

from __future__ import annotations

from typing import Callable

from saturn_airflow import settings
from saturn_airflow.store.files import PlanStore, Store


def sweep_of(store: Store, plan_id: str, workload: str) -> str:
    """A sweep is a plan lineage, named by its root plan: re-plans and resumes stay in the same sweep."""
    if plan_id:
        try:
            return PlanStore(store).lineage(plan_id)[0].plan_id
        except (KeyError, OSError, ValueError):
            return plan_id
    return workload


def tracker_for(store: Store, workload: str, plan_id: str, log: Callable[[str], None] = print):
    """The MLflow tracker of this sweep when `[saturn] mlflow_tracking_uri` is set, else None."""
    uri = settings.mlflow_tracking_uri()
    if not uri:
        return None
    try:
        from saturn_airflow.tracking.mlflow_runs import MlflowTracker
    except ImportError as e:
        raise RuntimeError(f"mlflow_tracking_uri is set but MLflow is not installed ({e}); "
                           "pip install 'airflow-provider-saturn[mlflow]'") from None
    return MlflowTracker(uri, store, workload, sweep_of(store, plan_id, workload), plan_id=plan_id,
                         experiment=settings.mlflow_experiment(workload))


__all__ = ["tracker_for", "sweep_of"]
