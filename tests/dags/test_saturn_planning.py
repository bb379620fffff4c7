"""The dags folder parses cleanly (no DB needed) and the planning DAG has the documented shape."""

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    import os

    os.environ["SATURN_HOME"] = str(tmp_path_factory.mktemp("saturn"))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(bag):
    assert bag.import_errors == {}


def test_planning_dag_shape(bag):
    dag = bag.dags.get("saturn_plan")
    assert dag is not None
    assert dag.is_paused_upon_creation is False
    ids = {t.task_id for t in dag.tasks}
    assert ids == {"validate", "ensure_pools", "profile", "solve", "publish"}
    assert dag.get_task("profile").upstream_task_ids == {"ensure_pools"}
    assert dag.get_task("publish").upstream_task_ids == {"solve"}
    assert {"workload", "solver", "time_limit", "replan_of", "drift_threshold", "drift_min_s"} <= set(dag.params.keys())
    assert dag.params["solver"] in ("highs", "cbc")
