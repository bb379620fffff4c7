"""Mirrors of a sweep's results in external experiment trackers (MLflow), off unless a setting turns one on.

The store stays the source of truth; a tracker is written to alongside it and never decides anything.
A sweep (`Plan.sweep`: one run of the planning DAG and its re-plans, named by the root plan id) is
one parent run; jobs trained by hand belong to the sweep `by-hand`.
"""

from __future__ import annotations

from saturn_airflow import settings
from saturn_airflow.store.files import Store


def tracker_for(store: Store, workload: str, sweep: str, plan_id: str = ""):
    """The MLflow tracker of this sweep when `[saturn] mlflow_tracking_uri` is set, else None."""
    uri = settings.mlflow_tracking_uri()
    if not uri:
        return None
    try:
        from saturn_airflow.tracking.mlflow_runs import MlflowTracker
    except ImportError as e:
        raise RuntimeError(f"mlflow_tracking_uri is set but MLflow is not installed ({e}); "
                           "pip install 'airflow-provider-saturn[mlflow]'") from None
    return MlflowTracker(uri, store, workload, sweep, plan_id=plan_id, experiment=settings.mlflow_experiment(workload))


__all__ = ["tracker_for"]
