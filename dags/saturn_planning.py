"""The planning DAG `saturn_plan`: validate -> ensure pools -> profile (per node) -> solve -> publish.

With `[saturn] nodes` set (one worker per node, each consuming its node's queue), the profile step is
one task per node, `profile_<node>`, in that node's queue; otherwise one mapped task per workload node.

Trigger it from the UI with a workload path (Params), or on a schedule. The drift sensor of a plan's
DAG triggers it too, with `replan_of` (and the observed state) in the conf: then it plans only the
remaining work of that plan, from observed rates, profiling nothing.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from saturn_airflow import settings
from saturn_airflow.operators.planning import (
    SaturnEnsurePoolsOperator,
    SaturnProfileOperator,
    SaturnPublishOperator,
    SaturnSolveOperator,
    SaturnValidateOperator,
)
from saturn_airflow.tasks.render import PLANNING_DAG_ID

with DAG(
    dag_id=PLANNING_DAG_ID,
    description="Plan a sweep of training jobs: profile, solve the SPASE MILP, publish a plan (one DAG per plan)",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    is_paused_upon_creation=False,
    render_template_as_native_obj=True,
    tags=["saturn"],
    params={
        "workload": Param("", type="string", title="Workload", description="Path of the workload YAML file"),
        "solver": Param(settings.solver(), enum=["highs", "cbc"], title="MILP solver"),
        "time_limit": Param(settings.time_limit(), type="number", minimum=1, title="Solver time limit (s)"),
        "drift_threshold": Param(settings.drift_threshold(), type="number", minimum=0,
                                 title="Re-plan when the makespan drifts by this fraction..."),
        "drift_min_s": Param(settings.drift_min_s(), type="number", minimum=0, title="...and by this many seconds"),
        "replan_of": Param(None, type=["null", "string"], title="Re-plan of plan id (set by the drift sensor)"),
        "reason": Param(None, type=["null", "string"], title="Why (set by the drift sensor)"),
        "drift": Param(None, type=["null", "object"], title="Observed state (set by the drift sensor)"),
    },
    doc_md=__doc__,
) as dag:
    validate = SaturnValidateOperator(task_id="validate", workload="{{ params.workload }}",
                                      replan_of="{{ params.replan_of }}", reason="{{ params.reason }}")
    pools = SaturnEnsurePoolsOperator(task_id="ensure_pools", retries=2)
    if settings.nodes():  # workers serve nodes: node N is profiled in queue N, by N's worker, on N's devices
        profile = [SaturnProfileOperator(task_id=f"profile_{n}", node=n, queue=n, retries=1) for n in settings.nodes()]
        profile_ids = [p.task_id for p in profile]
        pools >> profile
    else:  # one machine: one profile task per workload node, mapped
        profile = SaturnProfileOperator.partial(task_id="profile", retries=1).expand(node=pools.output)
        profile_ids = "profile"
    solve = SaturnSolveOperator(task_id="solve", solver="{{ params.solver }}", time_limit="{{ params.time_limit }}",
                                drift_threshold="{{ params.drift_threshold }}", drift_min_s="{{ params.drift_min_s }}",
                                profile_task_id=profile_ids)
    publish = SaturnPublishOperator(task_id="publish")
    validate >> pools
    profile >> solve >> publish
