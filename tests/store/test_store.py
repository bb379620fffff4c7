"""The store on both databases (SQLite file, PostgreSQL): one suite, parametrized by the `store` fixture."""

import multiprocessing as mp
import random
import threading

import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.plan import Plan, SolverInfo
from saturn_airflow.store import database, keys
from saturn_airflow.store.records import PlanStore, ProgressStore, Store


def plan(pid, parent=None):
    return Plan(plan_id=pid, workload="w", parent_plan_id=parent, created_at="t", makespan_s=1, lower_bound_s=1,
                solver=SolverInfo(name="x", status="heuristic"), assignments=[])


def test_plans_are_immutable_and_children_supersede(store):
    ps = PlanStore(store)
    ps.publish(plan("v1"))
    with pytest.raises(FileExistsError):
        ps.publish(plan("v1"))
    ps.publish(plan("v2", parent="v1"))
    assert ps.ids() == ["v1", "v2"]
    assert [p.plan_id for p in ps.plans()] == ["v1", "v2"]
    assert ps.superseded_by("v1") == "v2" and ps.superseded_by("v2") is None
    assert [p.plan_id for p in ps.lineage("v2")] == ["v1", "v2"]
    with pytest.raises(KeyError):
        ps.get("v3")


def test_every_plan_of_a_lineage_records_the_sweep_of_its_root(store):
    ps = PlanStore(store)
    assert ps.publish(plan("v1")).sweep_id == "v1"
    assert ps.publish(plan("v2", parent="v1")).sweep_id == "v1"
    assert ps.publish(plan("v3", parent="v2")).sweep_id == "v1"
    assert [ps.get(p).sweep for p in ("v1", "v2", "v3")] == ["v1"] * 3
    assert ps.publish(plan("w1")).sweep == "w1"  # the same workload planned again: a new sweep
    # a plan stored before plans recorded their sweep gets its root's from the lineage
    ps.store.write_json("plans/old2.json", {**plan("old2", parent="v2").model_dump(mode="json"), "sweep_id": None})
    assert ps.get("old2").sweep == "v1"


def test_a_failed_publish_leaves_nothing_half_written(store):
    """Publishing a child is one transaction: when the plan exists already, the parent is not superseded."""
    ps = PlanStore(store)
    ps.publish(plan("v1"))
    store.create_json(keys.plan("v2"), plan("v2").model_dump(mode="json"))  # someone got there first
    with pytest.raises(FileExistsError):
        ps.publish(plan("v2", parent="v1"))
    assert ps.superseded_by("v1") is None


def test_claim_has_exactly_one_winner_under_a_thread_race(store):
    ps = PlanStore(store)
    wins = []
    barrier = threading.Barrier(8)

    def go(i):
        barrier.wait()
        wins.append((ps.claim("replan-of-v1", {"who": i}), i))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(w for w, _ in wins) == [False] * 7 + [True]
    winner = [i for w, i in wins if w][0]
    assert ps.claim_holder("replan-of-v1")["who"] == winner


def _claim_in_process(url, db, name, i, out):
    out.put((i, PlanStore(Store(url, db=db)).claim(name, {"who": i})))


def test_claim_has_exactly_one_winner_across_processes(store):
    ctx = mp.get_context("fork")  # the children open their own connections (database.py forgets the parent's)
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(store.url, store.db_url, "replan-of-x", i, out))
             for i in range(4)]
    [p.start() for p in procs]
    results = [out.get(timeout=120) for _ in procs]
    [p.join(60) for p in procs]
    assert sorted(w for _, w in results) == [False, False, False, True]
    assert PlanStore(store).claim_holder("replan-of-x")["who"] == [i for i, w in results if w][0]


def test_progress_roundtrip(store):
    pr = ProgressStore(store, sweep="w-1")
    pr.put("w", "a", {"step": 3, "total": 10, "state": "running"})
    pr.put("w", "a", {"step": 4, "total": 10, "state": "running"})
    pr.put("w", "b", {"step": 1, "total": 10, "state": "running"})
    pr.put("w2", "a", {"step": 9, "total": 10, "state": "done"})
    assert pr.all("w") == {"a": {"step": 4, "total": 10, "state": "running", "job": "a", "workload": "w", "sweep": "w-1"},
                           "b": {"step": 1, "total": 10, "state": "running", "job": "b", "workload": "w", "sweep": "w-1"}}
    assert ProgressStore(store, sweep="w-2").all("w") == {}  # another sweep of the workload starts empty
    assert pr.get("w2", "a")["state"] == "done" and pr.get("w", "c") is None


def test_names_with_sql_wildcards_and_prefixes_stay_apart(store):
    """Keys are matched as ranges, not LIKE patterns: '_' and '%' are ordinary characters, and
    progress/w/s never lists progress/w_x/s or progress/w/s/sub."""
    pr = ProgressStore(store, sweep="s")
    for wl in ("w", "w_x", "w%", "wa"):
        pr.put(wl, "j_1", {"step": 1})
    store.write_json("progress/w/s/j_1/deeper.json", {"x": 1})
    assert list(pr.all("w")) == ["j_1"] and list(pr.all("w_x")) == ["j_1"] and list(pr.all("w%")) == ["j_1"]
    assert store.list("progress/w/s") == ["j_1"] and store.list("progress/w") == []


def test_documents_create_once_read_delete(store):
    assert store.read_json("x/y.json", default={}) == {}
    store.write_json("x/y.json", {"a": 1})
    assert store.read_json("x/y") == {"a": 1} and store.exists("x/y.json")
    assert store.create_json("x/z.json", {"n": 1}) and not store.create_json("x/z.json", {"n": 2})
    assert store.read_json("x/z") == {"n": 1}
    assert store.delete("x/z") and not store.exists("x/z") and not store.delete("x/z")


def test_log_keeps_append_order_and_streams_apart(store):
    rng = random.Random(7)
    written = {"a": [], "b": []}
    for i in range(40):
        s = rng.choice("ab")
        seq = store.append(s, {"i": i})
        written[s].append((seq, i))
    for s in "ab":
        got = store.read_log(s)
        assert [(e["seq"], e["i"]) for e in got] == written[s]
        assert all(e["t"] > 0 for e in got)
        assert [e["t"] for e in got] == sorted(e["t"] for e in got)  # the database's clock, monotone here
    last = written["a"][-1][0]
    assert store.read_log("a", after_seq=last) == []


def _append_many(url, db, k):
    s = Store(url, db=db)
    for i in range(25):
        s.append("shared", {"w": k, "i": i})


def test_log_appends_from_many_processes_all_land(store):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(store.url, store.db_url, k)) for k in range(3)]
    [p.start() for p in procs]
    [p.join(120) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    got = store.read_log("shared")
    assert len(got) == 75 and len({e["seq"] for e in got}) == 75
    for k in range(3):  # each writer's own order is kept
        assert [e["i"] for e in got if e["w"] == k] == list(range(25))


def test_reading_a_store_never_written_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__SATURN__STORE_DB", raising=False)
    monkeypatch.delenv("AIRFLOW__SATURN__STORE_CONN_ID", raising=False)
    s = Store(str(tmp_path / "store"))
    assert s.read_json("plans/p.json") is None and s.list("plans") == [] and s.read_log("leases") == []
    assert not PlanStore(s).ids() and not (tmp_path / "store").exists()  # nothing written, nothing created
    s.write_json("plans/p.json", {"a": 1})
    assert (tmp_path / "store" / database.SQLITE_FILE).exists() and s.read_json("plans/p.json") == {"a": 1}


def test_a_remote_store_folder_needs_a_database(monkeypatch):
    monkeypatch.delenv("AIRFLOW__SATURN__STORE_DB", raising=False)
    monkeypatch.delenv("AIRFLOW__SATURN__STORE_CONN_ID", raising=False)
    with pytest.raises(SaturnInputError, match="store_db"):
        Store("memory://saturn-test")


def test_a_remote_store_folder_with_a_database_works(store_db, tmp_path):
    s = Store("memory://saturn-test", db=store_db or database.sqlite_url(str(tmp_path)))
    s.write_json("x/y.json", {"a": 1})
    assert s.read_json("x/y.json") == {"a": 1}
    assert s.checkpoint_root() == "memory://saturn-test/checkpoints"


def test_database_from_an_airflow_connection(monkeypatch, tmp_path):
    """[saturn] store_conn_id: the connection's URI (JSON form here, as in AIRFLOW_CONN_*), postgres:// spelled
    the SQLAlchemy way."""
    from saturn_airflow import settings

    monkeypatch.delenv("AIRFLOW__SATURN__STORE_DB", raising=False)
    monkeypatch.setenv("AIRFLOW__SATURN__STORE_CONN_ID", "saturn_db")
    monkeypatch.setenv("AIRFLOW_CONN_SATURN_DB", '{"conn_type": "postgres", "host": "db.example", "port": 5433, '
                                                  '"login": "u", "password": "p@ss", "schema": "saturn"}')
    # Airflow (when imported) spells the scheme postgres://, the fallback reader postgresql://
    assert database.normalize_url(settings.store_db()) == "postgresql+psycopg2://u:p%40ss@db.example:5433/saturn"
    monkeypatch.setenv("AIRFLOW_CONN_SATURN_DB", "sqlite:///" + str(tmp_path / "x.db"))
    s = Store(str(tmp_path))
    assert s.db_url.endswith("x.db")
    monkeypatch.setenv("AIRFLOW__SATURN__STORE_CONN_ID", "missing")
    with pytest.raises(SaturnInputError, match="AIRFLOW_CONN_MISSING"):
        Store(str(tmp_path))


def test_an_unreachable_database_is_one_clear_error(tmp_path):
    from saturn_airflow.execution.leases import holder

    s = Store(str(tmp_path), db="postgresql+psycopg2://nobody:x@127.0.0.1:1/none")
    with pytest.raises(SaturnInputError, match="unreachable") as e:
        holder(s, "device/n/0")
    assert "x@" not in str(e.value)  # no password in the message
