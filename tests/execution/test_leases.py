"""Per-device leases: exclusive, all-or-nothing, stale ones broken by pid liveness, history checkable."""

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from saturn_airflow.execution import leases
from saturn_airflow.store.files import Store


def test_exclusive_and_released(tmp_path):
    s = Store(str(tmp_path))
    a = leases.acquire(s, [leases.device_key("n", 0)], {"job": "a"})
    with pytest.raises(leases.LeaseTimeout):
        leases.acquire(s, [leases.device_key("n", 0), leases.device_key("n", 1)], {"job": "b"}, timeout_s=0.3, poll_s=0.1)
    # all-or-nothing: b must not have kept device 1
    assert leases.holder(s, leases.device_key("n", 1)) is None
    a.release()
    with leases.acquire(s, [leases.device_key("n", 0)], {"job": "b"}):
        assert leases.holder(s, leases.device_key("n", 0))["job"] == "b"
    assert leases.holder(s, leases.device_key("n", 0)) is None
    assert leases.overlaps(leases.history(s)) == []


def test_stale_lease_of_a_dead_process_is_broken(tmp_path):
    s = Store(str(tmp_path))
    code = ("import sys; from saturn_airflow.execution import leases; from saturn_airflow.store.files import Store; "
            f"leases.acquire(Store({str(tmp_path)!r}), ['device/n/0'], {{'job': 'dead'}})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # exits holding the lease
    assert leases.holder(s, "device/n/0")["job"] == "dead"
    with leases.acquire(s, ["device/n/0"], {"job": "alive"}, timeout_s=5):
        assert leases.holder(s, "device/n/0")["job"] == "alive"
    assert any(e["event"] == "broken" for e in leases.history(s))


def test_live_remote_holder_is_not_stale():
    rec = {"host": "elsewhere", "pid": 1, "at": time.time()}
    assert not leases.is_stale(rec)
    assert leases.is_stale({**rec, "at": time.time() - 100}, max_age_s=10)
    assert not leases.is_stale({"host": leases.HOST, "pid": os.getpid(), "pid_start": leases._proc_start(os.getpid())})
    assert leases.is_stale({"host": leases.HOST, "pid": os.getpid(), "pid_start": "0"})  # pid reused


def _worker(root, i, n_rounds):
    s = Store(root)
    for _ in range(n_rounds):
        with leases.acquire(s, [leases.device_key("n", 0), leases.device_key("n", i % 2 + 1)], {"job": f"w{i}"},
                            poll_s=0.01):
            time.sleep(0.005)


def test_no_device_is_ever_held_twice_under_contention(tmp_path):
    procs = [mp.get_context("fork").Process(target=_worker, args=(str(tmp_path), i, 10)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    hist = leases.history(Store(str(tmp_path)))
    assert sum(e["event"] == "acquire" for e in hist) == 4 * 10 * 2
    assert leases.overlaps(hist) == []


def test_overlaps_detects_a_double_lease():
    ev = [{"t": 1, "event": "acquire", "key": "device/n/0", "token": "a", "job": "x"},
          {"t": 2, "event": "acquire", "key": "device/n/0", "token": "b", "job": "y"}]
    assert leases.overlaps(ev)


def test_a_dead_holder_whose_launch_still_runs_keeps_its_lease(tmp_path):
    """The task process died (SIGKILL) but the training it launched (its process group) has not
    stopped yet: the devices stay leased until that group is gone."""
    s = Store(str(tmp_path))
    launch = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        code = ("import sys; from saturn_airflow.execution import leases; from saturn_airflow.store.files import Store; "
                f"held = leases.acquire(Store({str(tmp_path)!r}), ['device/n/0', 'job/w/j'], {{'job': 'j'}}); "
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
