"""Leases on both databases: exclusive, all-or-nothing, heartbeated, broken by exactly one waiter when
the heartbeat stops, and a history that proves no device was held twice."""

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from saturn_airflow.execution import leases
from saturn_airflow.store import database
from saturn_airflow.store.records import Store


def test_exclusive_and_released(store):
    s = store
    a = leases.acquire(s, [leases.device_key("n", 0)], {"job": "a"})
    with pytest.raises(leases.LeaseTimeout):
        leases.acquire(s, [leases.device_key("n", 0), leases.device_key("n", 1)], {"job": "b"}, timeout_s=0.3, poll_s=0.1)
    # all-or-nothing: b must not have kept device 1
    assert leases.holder(s, leases.device_key("n", 1)) is None
    a.release()
    with leases.acquire(s, [leases.device_key("n", 0)], {"job": "b"}) as b:
        assert leases.holder(s, leases.device_key("n", 0))["job"] == "b"
        assert [h["key"] for h in leases.holders(s, "device/")] == ["device/n/0"]
        assert b.heartbeat()
    assert leases.holder(s, leases.device_key("n", 0)) is None
    assert leases.overlaps(leases.history(s)) == []


def test_stale_lease_of_a_dead_process_on_this_host_is_broken_at_once(store):
    code = ("from saturn_airflow.execution import leases; from saturn_airflow.store.records import Store; "
            f"leases.acquire(Store({store.url!r}, db={store.db_url!r}), ['device/n/0'], {{'job': 'dead'}}, ttl_s=3600)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # exits holding the lease
    rec = leases.holder(store, "device/n/0")
    assert rec["job"] == "dead" and not rec["expired"] and leases.is_stale(rec)
    t = time.monotonic()
    with leases.acquire(store, ["device/n/0"], {"job": "alive"}, timeout_s=5):
        assert leases.holder(store, "device/n/0")["job"] == "alive"
    assert time.monotonic() - t < 5  # no wait for the hour-long ttl: the holder is provably gone
    broken = [e for e in leases.history(store) if e["event"] == "broken"]
    assert len(broken) == 1 and broken[0]["job"] == "dead"


def test_heartbeats_keep_a_lease_past_its_ttl(store):
    with leases.acquire(store, ["device/n/0"], {"job": "a"}, ttl_s=1.0) as a:
        time.sleep(2.5)  # 2.5 ttls: only the heartbeat (every ttl/4) keeps it
        with pytest.raises(leases.LeaseTimeout):
            leases.acquire(store, ["device/n/0"], {"job": "b"}, timeout_s=1.0, poll_s=0.1)
        assert not a.lost.is_set()


class _Foreign:
    """A lease record made to look like another host's, so only its heartbeat can expire it."""

    @staticmethod
    def forge(store, key, ttl_s):
        sa = database.sqlalchemy()
        t = database.tables()["leases"]
        with store.begin() as conn:
            conn.execute(sa.update(t).where(t.c.key == key).values(holder="elsewhere/0/0", pid=1, ttl_s=ttl_s))


def _wait_and_take(url, db, i, out):
    s = Store(url, db=db)
    held = leases.acquire(s, ["device/n/0", "job/w/j"], {"job": f"waiter{i}"}, timeout_s=60, poll_s=0.05)
    time.sleep(0.5)  # hold it a while: a second breaker would overlap here
    held.release()
    out.put(i)


def test_an_expired_lease_is_broken_by_exactly_one_of_many_waiters(store):
    """A remote holder stops heartbeating; four waiters in four processes race: one breaks it, the others
    then queue behind the winner (the history shows one break and no overlap)."""
    dead = leases.acquire(store, ["device/n/0", "job/w/j"], {"job": "remote"}, ttl_s=1.5, heartbeat=False)
    _Foreign.forge(store, "device/n/0", 1.5)
    _Foreign.forge(store, "job/w/j", 1.5)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_wait_and_take, args=(store.url, store.db_url, i, out)) for i in range(4)]
    [p.start() for p in procs]
    done = sorted(out.get(timeout=120) for _ in procs)
    [p.join(60) for p in procs]
    assert done == [0, 1, 2, 3]
    hist = leases.history(store)
    broken = [e for e in hist if e["event"] == "broken"]
    assert sorted(e["key"] for e in broken) == ["device/n/0", "job/w/j"]  # each key broken once
    assert len({e["token"] for e in broken}) == 1 and broken[0]["token"] == dead.token
    assert leases.overlaps(hist) == [] and leases.overlaps(hist, prefix="job/") == []
    assert not dead.heartbeat() and dead.lost.is_set()  # the stalled holder learns it lost them


def test_a_holder_that_stalls_past_its_ttl_sees_the_lease_lost(store):
    lost = []
    a = leases.acquire(store, ["device/n/0"], {"job": "a"}, ttl_s=1.0, heartbeat=False, log=lost.append)
    _Foreign.forge(store, "device/n/0", 1.0)
    b = leases.acquire(store, ["device/n/0"], {"job": "b"}, timeout_s=30, poll_s=0.1)
    assert not a.heartbeat() and a.lost.is_set() and "lease lost" in lost[-1]
    a.release()  # releasing a lost lease must not free the new holder's
    assert leases.holder(store, "device/n/0")["job"] == "b"
    b.release()


def _worker(url, db, i, n_rounds):
    s = Store(url, db=db)
    for _ in range(n_rounds):
        with leases.acquire(s, [leases.device_key("n", 0), leases.device_key("n", i % 2 + 1)], {"job": f"w{i}"},
                            poll_s=0.01):
            time.sleep(0.005)


def test_no_device_is_ever_held_twice_under_contention(store):
    procs = [mp.get_context("fork").Process(target=_worker, args=(store.url, store.db_url, i, 10)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    hist = leases.history(store)
    assert sum(e["event"] == "acquire" for e in hist) == 4 * 10 * 2
    assert leases.overlaps(hist) == []


def test_overlaps_detects_a_double_lease():
    ev = [{"t": 1, "event": "acquire", "key": "device/n/0", "token": "a", "job": "x"},
          {"t": 2, "event": "acquire", "key": "device/n/0", "token": "b", "job": "y"}]
    assert leases.overlaps(ev)
    ok = ev[:1] + [{"t": 1.5, "event": "release", "key": "device/n/0", "token": "a"}] + ev[1:]
    assert leases.overlaps(ok) == []


def test_a_dead_holder_whose_launch_still_runs_keeps_its_lease(store):
    """The task process died (SIGKILL) but the training it launched (its process group) has not
    stopped yet: the devices stay leased until that group is gone."""
    s = store
    launch = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        code = ("from saturn_airflow.execution import leases; from saturn_airflow.store.records import Store; "
                f"held = leases.acquire(Store({s.url!r}, db={s.db_url!r}), ['device/n/0', 'job/w/j'], {{'job': 'j'}}); "
                f"held.attach_group({launch.pid})")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # the holder exits, its group lives
        assert leases.holder(s, "device/n/0")["group"] == launch.pid
        assert not leases.is_stale(leases.holder(s, "device/n/0"))
        with pytest.raises(leases.LeaseTimeout):
            leases.acquire(s, ["device/n/0"], {"job": "retry"}, timeout_s=0.5, poll_s=0.1)
    finally:
        os.killpg(launch.pid, 9)
        launch.wait(30)
    with leases.acquire(s, ["device/n/0", "job/w/j"], {"job": "retry"}, timeout_s=5):  # now it is stale
        assert leases.holder(s, "device/n/0")["job"] == "retry"
    assert leases.overlaps(leases.history(s)) == []
