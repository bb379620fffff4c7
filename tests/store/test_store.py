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


def test_every_plan_of_a_lineage_records_the_sweep_of_its_root(tmp_path):
    ps = PlanStore(Store(str(tmp_path)))
    assert ps.publish(plan("v1")).sweep_id == "v1"
    assert ps.publish(plan("v2", parent="v1")).sweep_id == "v1"
    assert ps.publish(plan("v3", parent="v2")).sweep_id == "v1"
    assert [ps.get(p).sweep for p in ("v1", "v2", "v3")] == ["v1"] * 3
    assert ps.publish(plan("w1")).sweep == "w1"  # the same workload planned again: a new sweep
    # a plan stored before plans recorded their sweep gets its root's from the lineage
    ps.store.write_json("plans/old2.json", {**plan("old2", parent="v2").model_dump(mode="json"), "sweep_id": None})
    assert ps.get("old2").sweep == "v1"


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
    pr = ProgressStore(s, sweep="w-1")
    pr.put("w", "a", {"step": 3, "total": 10, "state": "running"})
    pr.put("w", "a", {"step": 4, "total": 10, "state": "running"})
    assert pr.all("w") == {"a": {"step": 4, "total": 10, "state": "running", "job": "a", "workload": "w",
                                 "sweep": "w-1"}}
    assert [p.name for p in (tmp_path / "progress" / "w" / "w-1").iterdir()] == ["a.json"]
    assert ProgressStore(s, sweep="w-2").all("w") == {}  # another sweep of the workload starts empty


def test_memory_fsspec_store_works():
    s = Store("memory://saturn-test")
    s.write_json("x/y.json", {"a": 1})
    assert s.read_json("x/y.json") == {"a": 1}
    assert s.create_json("x/z.json", {}) and not s.create_json("x/z.json", {})
