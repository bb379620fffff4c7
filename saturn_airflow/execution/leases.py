"""Per-device (and per-job) leases: two jobs never hold one device, on one host or across many.

A lease is a row of the store's database: key, the holder's token and identity, the owner (job,
plan, node...), and a heartbeat time on the database's clock. Keys (store/keys.py):
  device/<node>/<id>              one GPU (or CPU core) of a node
  job/<workload>/<sweep>/<job>    one training job of one sweep (never run twice at once, across the
                                  sweep's plan versions and nodes; another sweep's job is another job)

- Acquisition is one transaction over every key, all or nothing (sorted order: no deadlock between
  two multi-device jobs); a caller that cannot get every key waits and tries again.
- The holder heartbeats its leases from a thread every ttl/4. A waiter on another host takes a
  lease for expired when its heartbeat is older than its ttl. A waiter on the holder's own host (and
  pid namespace) knows better: the lease is live while the holder process, or the process group it
  launched on the devices (torchrun and its ranks, `attach_group`), still runs, and stale at once
  when neither does.
- An expired lease is taken over by a compare-and-set on its old token: of any number of waiters on
  any hosts, exactly one breaks it.
- A holder that finds its lease gone (it stalled past its ttl and was broken) sets `Leases.lost`;
  the training task then kills its runner at once, without a checkpoint.

Every acquire, release and break is appended to the store's log stream "leases" in the same
transaction, which the end-to-end tests read to prove no device id was ever leased to two jobs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterable, Optional

from saturn_airflow.store import database, keys
from saturn_airflow.store.records import Store

HOST = socket.gethostname()


def device_key(node: str, device_id: int) -> str:
    return keys.device_lease(node, device_id)


def job_key(workload: str, job: str, *, sweep: str) -> str:
    return keys.job_lease(workload, sweep, job)


def _host_identity() -> str:
    """This host and pid namespace: two processes with equal identities can check each other's pids."""
    parts = [HOST]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip()[:8])
        except OSError:
            pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


HOST_ID = _host_identity()


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


def is_stale(record: dict) -> bool:
    """A lease record whose holder is gone. On the holder's host: neither its process nor the process
    group it launched runs. Elsewhere: its heartbeat is older than its ttl."""
    if record.get("holder") == HOST_ID and record.get("pid"):
        if pid_alive(int(record["pid"]), record.get("pid_start")):
            return False
        return not (record.get("group") and group_alive(int(record["group"])))
    return bool(record.get("expired"))


def _record(row, now: float) -> dict:
    owner = json.loads(row.owner)
    return {**owner, "key": row.key, "token": row.token, "holder": row.holder, "host": owner.get("host"),
            "pid": row.pid, "pid_start": row.pid_start, "group": row.pgroup, "at": row.acquired_at,
            "heartbeat_at": row.heartbeat_at, "ttl_s": row.ttl_s, "expired": now - row.heartbeat_at > row.ttl_s}


def holder(store: Store, key: str) -> Optional[dict]:
    """The current lease record of `key` (with `expired` on the database's clock), or None."""
    sa = database.sqlalchemy()
    t = database.tables()["leases"]
    with store.connection() as conn:
        row = conn.execute(sa.select(t).where(t.c.key == key)).first()
        return None if row is None else _record(row, database.now(conn))


def holders(store: Store, prefix: str = "") -> list[dict]:
    """Every lease record whose key starts with `prefix`."""
    sa = database.sqlalchemy()
    t = database.tables()["leases"]
    with store.connection() as conn:
        q = sa.select(t).order_by(t.c.key)
        if prefix:
            q = q.where(database.prefix_range(t.c.key, prefix))
        now = database.now(conn)
        return [_record(r, now) for r in conn.execute(q).all()]


class Leases:
    """The leases one holder took; heartbeated until `.release()` or the end of the `with` block."""

    def __init__(self, store: Store, keys_: list[str], token: str, owner: dict, ttl_s: float,
                 log: Callable[[str], None] = lambda m: None, heartbeat: bool = True):
        self.store, self.keys, self.token, self.owner, self.ttl_s = store, keys_, token, owner, ttl_s
        self.log = log
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if heartbeat and keys_:
            self._thread = threading.Thread(target=self._beat, name="saturn-lease-heartbeat", daemon=True)
            self._thread.start()

    @property
    def period_s(self) -> float:
        return max(0.2, self.ttl_s / 4.0)

    def heartbeat(self) -> bool:
        """Renew every key now; False (and `lost` set) when one is no longer ours."""
        sa = database.sqlalchemy()
        t = database.tables()["leases"]
        with self.store.begin() as conn:
            now = database.now(conn)
            n = conn.execute(sa.update(t).where(t.c.key.in_(self.keys), t.c.token == self.token)
                             .values(heartbeat_at=now)).rowcount
        if n < len(self.keys):
            if not self.lost.is_set():
                self.log(f"lease lost: {len(self.keys) - n} of {self.keys} were broken by another holder")
            self.lost.set()
            return False
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                if not self.heartbeat():
                    return
            except Exception as e:  # noqa: BLE001 - a database hiccup: try again next period
                self.log(f"lease heartbeat failed ({type(e).__name__}: {e}); retrying")

    def attach_group(self, pgid: int) -> None:
        """The holder launched a process group (torchrun and its ranks) that uses these keys: on this
        host the leases stay live while any process of it runs, even after the holder itself died."""
        sa = database.sqlalchemy()
        t = database.tables()["leases"]
        with self.store.begin() as conn:
            conn.execute(sa.update(t).where(t.c.key.in_(self.keys), t.c.token == self.token).values(pgroup=int(pgid)))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self.keys:
            _release(self.store, self.keys, self.token, self.owner)
        self.keys = []

    def __enter__(self) -> "Leases":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Blocked(Exception):
    def __init__(self, key: str, record: dict):
        super().__init__(key)
        self.key, self.record = key, record


def _log(store: Store, conn, event: str, key: str, token: str, owner: dict, at: float) -> None:
    store.append(keys.LEASE_STREAM, {"t": at, "event": event, "key": key, "token": token, **owner}, conn=conn)


def _try_all(store: Store, keys_: list[str], token: str, owner: dict, ttl_s: float,
             log: Callable[[str], None]) -> None:
    """One transaction: take every key (inserting, or taking over an expired lease) or raise _Blocked."""
    sa = database.sqlalchemy()
    t = database.tables()["leases"]
    pid = os.getpid()
    with store.begin() as conn:
        now = database.now(conn)
        values = {"token": token, "holder": HOST_ID, "pid": pid, "pid_start": _proc_start(pid), "pgroup": None,
                  "owner": json.dumps(owner), "acquired_at": now, "heartbeat_at": now, "ttl_s": float(ttl_s)}
        for key in keys_:
            if database.insert_ignore(conn, t, {"key": key, **values}):
                continue
            row = conn.execute(sa.select(t).where(t.c.key == key)).first()
            if row is None:  # released between our insert and our read: one more insert decides
                if database.insert_ignore(conn, t, {"key": key, **values}):
                    continue
                raise _Blocked(key, {})
            current = _record(row, now)
            if row.token == token:
                continue
            if not is_stale(current):
                raise _Blocked(key, current)
            # compare-and-set on the old token: exactly one of the waiters breaks it
            won = conn.execute(sa.update(t).where(t.c.key == key, t.c.token == row.token)
                               .values(**values)).rowcount == 1
            if not won:
                raise _Blocked(key, current)
            why = "its processes are gone" if row.holder == HOST_ID else \
                f"no heartbeat for {now - row.heartbeat_at:.0f} s (ttl {row.ttl_s:.0f} s)"
            log(f"lease {key}: broke the lease of {current.get('job')!r} (holder {row.holder}, pid {row.pid}): {why}")
            _log(store, conn, "broken", key, row.token,
                 {k: current.get(k) for k in ("job", "plan_id", "node", "worker_node") if current.get(k) is not None}, now)
        for key in keys_:
            _log(store, conn, "acquire", key, token, owner, now)


def _release(store: Store, keys_: list[str], token: str, owner: dict) -> None:
    sa = database.sqlalchemy()
    t = database.tables()["leases"]
    with store.begin() as conn:
        now = database.now(conn)
        for key in reversed(keys_):
            if conn.execute(sa.delete(t).where(t.c.key == key, t.c.token == token)).rowcount:
                _log(store, conn, "release", key, token, owner, now)


def acquire(store: Store, keys_: Iterable[str], owner: Optional[dict] = None, *, timeout_s: Optional[float] = None,
            poll_s: float = 1.0, ttl_s: Optional[float] = None, heartbeat: bool = True,
            log: Callable[[str], None] = lambda m: None) -> Leases:
    """Take every key or none; wait (polling) until all are free or `timeout_s` passes (LeaseTimeout).

    `ttl_s` (default [saturn] lease_ttl_s): how long the leases outlive a holder that stopped heartbeating."""
    from saturn_airflow import settings

    keys_ = sorted(set(keys_))
    owner = {"host": HOST, **dict(owner or {})}
    ttl_s = float(ttl_s if ttl_s is not None else settings.lease_ttl_s())
    token = uuid.uuid4().hex
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited_for: Optional[str] = None
    while True:
        try:
            _try_all(store, keys_, token, owner, ttl_s, log)
            return Leases(store, keys_, token, owner, ttl_s, log=log, heartbeat=heartbeat)
        except _Blocked as b:
            if b.key != waited_for:
                cur = b.record
                log(f"waiting for lease {b.key} (held by job {cur.get('job')!r} of plan {cur.get('plan_id')!r}, "
                    f"{cur.get('host')} pid {cur.get('pid')})")
                waited_for = b.key
            blocked = b.key
        if deadline is not None and time.monotonic() > deadline:
            raise LeaseTimeout(f"could not lease {blocked} within {timeout_s:.1f} s")
        time.sleep(poll_s)


def history(store: Store) -> list[dict]:
    """Every acquire / release / broken event, in the order they happened."""
    return store.read_log(keys.LEASE_STREAM)


def overlaps(events: list[dict], prefix: str = "device/") -> list[str]:
    """Keys under `prefix` that two tokens held at the same time, from a lease history (empty: none)."""
    held: dict[str, str] = {}
    bad: list[str] = []
    order = (lambda e: e["seq"]) if all("seq" in e for e in events) else (lambda e: e["t"])
    for e in sorted(events, key=order):
        if not e["key"].startswith(prefix):
            continue
        if e["event"] == "acquire":
            if e["key"] in held and held[e["key"]] != e["token"]:
                bad.append(f"{e['key']} leased to {e.get('job')} while held by another holder")
            held[e["key"]] = e["token"]
        elif e["event"] in ("release", "broken") and held.get(e["key"]) == e["token"]:
            del held[e["key"]]
    return bad
