"""Per-device (and per-job) leases: two jobs never hold one device, even when Airflow over-queues.

A lease is a small JSON record `leases/<key>.json` in the store, created once (atomically) by its
holder and deleted on release. Keys used by the provider:
  device/<node>/<id>        one GPU (or CPU core) of a node
  job/<workload>/<sweep>/<job>  one training job of one sweep (never run twice at once, across the
                            sweep's plan versions; another sweep's job of the same name is another job)

Acquisition is all-or-nothing in sorted key order (no deadlock between two multi-device jobs); a
caller that cannot get every key releases what it took and waits. A lease whose holder process is
gone (same host, pid dead or reused) is stale and is broken under a per-key file lock, so exactly one
waiter breaks it. Remote stores (s3://...) get the same create-once leases but no pid check: a stale
remote lease must be removed by hand (`saturn` docs) or expire via `max_age_s`.

Every acquire and release is appended to `leases/history.jsonl` (local stores), which the end-to-end
test reads to prove that no device id was ever leased to two jobs at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
from typing import Callable, Iterable, Optional

from saturn_airflow.store.files import Store

HOST = socket.gethostname()


def device_key(node: str, device_id: int) -> str:
    return f"device/{node}/{int(device_id)}"


def job_key(workload: str, job: str, *, sweep: str) -> str:
    return f"job/{workload}/{sweep}/{job}"


def _proc_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
        return data.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start: Optional[str] = None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None and os.path.exists("/proc"):
        return _proc_start(pid) == start
    return True


class LeaseTimeout(TimeoutError):
    pass


class Leases:
    """The leases one holder took; release them with `.release()` or by leaving the `with` block."""

    def __init__(self, store: Store, keys: list[str], token: str, owner: dict):
        self.store, self.keys, self.token, self.owner = store, keys, token, owner

    def release(self) -> None:
        for key in reversed(self.keys):
            _release_one(self.store, key, self.token, self.owner)
        self.keys = []

    def attach_group(self, pgid: int) -> None:
        """The holder launched a process group (torchrun and its ranks) that uses these keys: the
        leases stay live while any process of it runs, even after the holder itself died."""
        for key in self.keys:
            with _key_lock(self.store, key):
                current = holder(self.store, key)
                if current is not None and current.get("token") == self.token:
                    self.store.write_json(_rel(key), {**current, "group": int(pgid)})

    def __enter__(self) -> "Leases":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _rel(key: str) -> str:
    return f"leases/{key}.json"


def _history(store: Store, event: str, key: str, owner: dict, token: str) -> None:
    store.append_jsonl("leases/history.jsonl", {"t": time.time(), "event": event, "key": key, "token": token, **owner})


@contextlib.contextmanager
def _key_lock(store: Store, key: str):
    """A per-key flock around check-and-break of stale leases (local stores); a no-op remotely."""
    if not store.local:
        yield
        return
    path = store.local_path("leases", key + ".lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holder(store: Store, key: str) -> Optional[dict]:
    return store.read_json(_rel(key))


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` still runs."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(record: dict, max_age_s: Optional[float] = None) -> bool:
    if record.get("host") == HOST and "pid" in record:
        if pid_alive(int(record["pid"]), record.get("pid_start")):
            return False
        return not (record.get("group") and group_alive(int(record["group"])))
    if max_age_s is not None:
        return time.time() - float(record.get("at", 0)) > max_age_s
    return False


def _try_one(store: Store, key: str, record: dict, max_age_s: Optional[float], log) -> bool:
    with _key_lock(store, key):
        if store.create_json(_rel(key), record):
            return True
        current = holder(store, key)
        if current is None:  # released between our create and our read: try once more
            return store.create_json(_rel(key), record)
        if current.get("token") == record["token"]:
            return True
        if is_stale(current, max_age_s):
            log(f"lease {key}: breaking the stale lease of pid {current.get('pid')} ({current.get('job')})")
            _history(store, "broken", key, {k: current.get(k) for k in ("job", "plan_id", "pid")}, current.get("token", ""))
            store.fs.rm(store.path(_rel(key)))
            return store.create_json(_rel(key), record)
        return False


def _release_one(store: Store, key: str, token: str, owner: dict) -> None:
    with _key_lock(store, key):
        current = holder(store, key)
        if current is not None and current.get("token") == token:
            _history(store, "release", key, owner, token)
            store.fs.rm(store.path(_rel(key)))


def acquire(store: Store, keys: Iterable[str], owner: Optional[dict] = None, *, timeout_s: Optional[float] = None,
            poll_s: float = 1.0, max_age_s: Optional[float] = None, log: Callable[[str], None] = lambda m: None) -> Leases:
    """Take every key or none; wait (polling) until all are free or `timeout_s` passes (LeaseTimeout)."""
    keys = sorted(set(keys))
    owner = dict(owner or {})
    pid = os.getpid()
    token = uuid.uuid4().hex
    record = {**owner, "token": token, "host": HOST, "pid": pid, "pid_start": _proc_start(pid), "at": time.time()}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited_for: Optional[str] = None
    while True:
        taken: list[str] = []
        blocked: Optional[str] = None
        for key in keys:
            if _try_one(store, key, record, max_age_s, log):
                taken.append(key)
            else:
                blocked = key
                break
        if blocked is None:
            for key in taken:
                _history(store, "acquire", key, owner, token)
            return Leases(store, taken, token, owner)
        for key in reversed(taken):
            with _key_lock(store, key):
                current = holder(store, key)
                if current is not None and current.get("token") == token:
                    store.fs.rm(store.path(_rel(key)))
        if blocked != waited_for:
            cur = holder(store, blocked) or {}
            log(f"waiting for lease {blocked} (held by job {cur.get('job')!r} of plan {cur.get('plan_id')!r}, pid {cur.get('pid')})")
            waited_for = blocked
        if deadline is not None and time.monotonic() > deadline:
            raise LeaseTimeout(f"could not lease {blocked} within {timeout_s:.0f} s")
        time.sleep(poll_s)


def history(store: Store) -> list[dict]:
    return store.read_jsonl("leases/history.jsonl")


def overlaps(events: list[dict], prefix: str = "device/") -> list[str]:
    """Keys under `prefix` that two tokens held at the same time, from a lease history (empty: none)."""
    held: dict[str, str] = {}
    bad: list[str] = []
    for e in sorted(events, key=lambda e: e["t"]):
        if not e["key"].startswith(prefix):
            continue
        if e["event"] == "acquire":
            if e["key"] in held and held[e["key"]] != e["token"]:
                bad.append(f"{e['key']} leased to {e.get('job')} while held by another holder")
            held[e["key"]] = e["token"]
        elif e["event"] in ("release", "broken") and held.get(e["key"]) == e["token"]:
            del held[e["key"]]
    return bad
