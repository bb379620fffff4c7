import threading

import pytest

from saturn_airflow.spec.plan import Plan, SolverInfo
from saturn_airflow.store.files import PlanStore, ProgressStore, Store


def plan(pid, parent=None):
    return Plan(plan_id=pid, workload="w", parent_plan_id=parent, created_at="t", makespan_s=1, lower_bound_s=1,
                solver=SolverInfo(name="x", status="heuristic"), assignments=[])


def test_plans_are_immutable_and_children_supersede(tmp_path):
    ps = PlanStore(Store(str(tmp_path)))
    ps.publish(plan("v1"))
    with pytest.raises(FileExistsError):
        ps.publish(plan("v1"))
    ps.publish(plan("v2", parent="v1"))
    assert ps.ids() == ["v1", "v2"]
    assert ps.superseded_by("v1") == "v2" and ps.superseded_by("v2") is None
    assert [p.plan_id for p in ps.lineage("v2")] == ["v1", "v2"]


def test_claim_has_exactly_one_winner_under_a_race(tmp_path):
    ps = PlanStore(Store(str(tmp_path)))
    wins = []
    barrier = threading.Barrier(8)

    def go(i):
        barrier.wait()
        wins.append(ps.claim("replan-of-v1", {"who": i}))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(wins) == [False] * 7 + [True]


def test_progress_roundtrip_and_no_temp_files_left(tmp_path):
    s = Store(str(tmp_path))
    pr = ProgressStore(s)
    pr.put("w", "a", {"step": 3, "total": 10, "state": "running"})
    pr.put("w", "a", {"step": 4, "total": 10, "state": "running"})
    assert pr.all("w") == {"a": {"step": 4, "total": 10, "state": "running", "job": "a", "workload": "w"}}
    assert [p.name for p in (tmp_path / "progress" / "w").iterdir()] == ["a.json"]


def test_memory_fsspec_store_works():
    s = Store("memory://saturn-test")
    s.write_json("x/y.json", {"a": 1})
    assert s.read_json("x/y.json") == {"a": 1}
    assert s.create_json("x/z.json", {}) and not s.create_json("x/z.json", {})
