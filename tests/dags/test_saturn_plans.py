"""Rendering: one DAG per plan version, pools/queues/priorities/edges from the plan, fast, no torch."""

import os
import subprocess
import sys
import time
from pathlib import Path


from saturn_airflow.tasks.render import DRIFT_TASK, REPLAN_TASK, RESULT_TASK, dag_id, synthetic_plan, task_specs
from saturn_airflow.store.records import PlanStore, Store

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "dags" / "saturn_plans.py"


def _load_factory(store_url, monkeypatch):
    monkeypatch.setenv("SATURN_HOME", store_url)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"saturn_plans_{time.time_ns()}", FACTORY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_node_plan_renders_pools_queues_priorities_and_edges(tmp_path, monkeypatch):
    plan = synthetic_plan(12, nodes=[("node0", 4), ("node1", 2)], plan_id="two-node-v1")
    PlanStore(Store(str(tmp_path))).publish(plan)
    mod = _load_factory(str(tmp_path), monkeypatch)
    dag = getattr(mod, dag_id("two-node-v1"))
    assert dag.dag_id == "saturn_run__two-node-v1"
    assert dag.is_paused_upon_creation is False
    assert dag.max_active_runs == 1
    jobs = {a.job: a for a in plan.assignments}
    order = sorted(plan.assignments, key=lambda a: (a.start_s, a.end_s, a.job))
    for rank, a in enumerate(order):
        t = dag.get_task(a.job)
        assert t.pool == f"saturn_{a.node}"
        assert t.pool_slots == a.gpus
        assert t.queue == a.node
        assert t.priority_weight == len(order) - rank
        assert t.trigger_rule == "all_done"
        assert set(t.upstream_task_ids) == set(a.after)
    assert {jobs[j].node for j in jobs} == {"node0", "node1"}
    assert dag.get_task(DRIFT_TASK).downstream_task_ids == {REPLAN_TASK}
    result = dag.get_task(RESULT_TASK)  # the plan's verdict comes after every training task
    assert result.upstream_task_ids == set(jobs) and result.trigger_rule == "all_done" and result.retries == 0
    assert len(dag.tasks) == 12 + 3


def test_each_plan_version_gets_its_own_dag_and_supersede_does_not_change_it(tmp_path, monkeypatch):
    ps = PlanStore(Store(str(tmp_path)))
    v1 = synthetic_plan(4, nodes=[("local", 2)], plan_id="w-v1")
    ps.publish(v1)
    before = _load_factory(str(tmp_path), monkeypatch)
    shape = {t.task_id: (t.pool, t.pool_slots, sorted(t.upstream_task_ids)) for t in getattr(before, dag_id("w-v1")).tasks}
    data = synthetic_plan(2, nodes=[("local", 2)], plan_id="w-v2").model_dump(mode="json")
    data.update(parent_plan_id="w-v1", kept=[data["assignments"][0]["job"]], reason="test")
    from saturn_airflow.spec.plan import Plan

    ps.publish(Plan.model_validate(data))
    after = _load_factory(str(tmp_path), monkeypatch)
    assert {t.task_id: (t.pool, t.pool_slots, sorted(t.upstream_task_ids)) for t in getattr(after, dag_id("w-v1")).tasks} == shape
    v2 = getattr(after, dag_id("w-v2"))
    kept = v2.get_task(data["assignments"][0]["job"])
    assert kept.pool == "default_pool" and kept.pool_slots == 1  # waits for the parent's run; holds no GPU slots


def test_kept_jobs_hold_no_gpu_slots_in_specs():
    data = synthetic_plan(3, nodes=[("n", 2)], plan_id="p").model_dump(mode="json")
    from saturn_airflow.spec.plan import Plan

    data["kept"] = ["job-0000"]
    specs = {s.job: s for s in task_specs(Plan.model_validate(data))}
    assert specs["job-0000"].kept and specs["job-0000"].pool == "default_pool"
    assert specs["job-0001"].pool == "saturn_n"


def test_factory_imports_no_torch_and_renders_500_jobs(tmp_path):
    ps = PlanStore(Store(str(tmp_path)))
    ps.publish(synthetic_plan(500, nodes=[("node0", 8), ("node1", 8)], plan_id="big-v1"))
    code = (
        "import sys, time, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(FACTORY)!r})\n"
        "import airflow.sdk, saturn_airflow.operators.training, saturn_airflow.operators.drift\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "dags = m.render_all()\n"
        "print(sum(len(d.task_dict) for d in dags.values()), 'torch' in sys.modules, 'pyomo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SATURN_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    n_tasks, torch_loaded, pyomo_loaded = out.stdout.split()[-3:]
    assert torch_loaded == "False" and pyomo_loaded == "False"
    assert int(n_tasks) >= 500  # every job a task (its speed is bench/render_bench.py's, not a unit test's)


def test_newest_plans_by_stamp_across_workloads():
    from saturn_airflow.tasks.render import newest

    ids = ["b-20260101T000000-aaaaaa", "a-20260102T000000-bbbbbb", "z-20251231T000000-cccccc"]
    assert newest(ids, 2) == ["b-20260101T000000-aaaaaa", "a-20260102T000000-bbbbbb"]
    assert newest(ids, 0) == []
