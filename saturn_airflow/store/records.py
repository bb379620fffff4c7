"""The store: records in a database (SQLite file on one machine, PostgreSQL for a cluster), checkpoints
under a folder or fsspec URL that every node can reach.

Records are JSON documents under slash-separated keys (store/keys.py names them all) plus append-only
logs; `PlanStore` and `ProgressStore` are the typed views the engine uses:
  plans/<plan_id>                 immutable plan versions (created once)
  superseded/<plan_id>            a newer plan replaced this one (its unstarted jobs skip)
  claims/<name>                   create-once records (e.g. "one re-plan per parent plan")
  progress/<workload>/<sweep>/<job>   the latest progress record of a job in one sweep
  tables/, staged/, runs/, profiles/   the planning DAG's tables, staged plans and the profiler's cache
  log streams "leases" and "events/<workload>"   lease history and job start/end events
A sweep is one run of the planning DAG and its re-plans (`Plan.sweep`: the lineage's root plan id);
jobs run by hand (`saturn train`) belong to the sweep `BY_HAND` unless told otherwise.
The same code runs on both databases (store/database.py); a create-once write is one conditional
INSERT, so exactly one of any number of racing writers, on any hosts, wins it.

Where the database is: `[saturn] store_db` (a SQLAlchemy URL) or `[saturn] store_conn_id` (an
Airflow connection), else the SQLite file `saturn.db` inside the store folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import time
from typing import Any, Iterator, Optional

import fsspec

from saturn_airflow import settings
from saturn_airflow.errors import NotFoundError, SaturnInputError
from saturn_airflow.spec.plan import Plan, parse_plan
from saturn_airflow.store import database, keys

BY_HAND = "by-hand"  # the sweep of jobs trained outside any plan (`saturn train`, `run_job` in tests)


def default_store_url() -> str:
    """$SATURN_HOME, else [saturn] store_url, else $AIRFLOW_HOME/saturn (see settings.store_url)."""
    return settings.store_url()


def _key(rel: str) -> str:
    rel = rel.strip("/")
    return rel[: -len(".json")] if rel.endswith(".json") else rel


class Store:
    """Records (a database) and blobs (a folder or fsspec URL: checkpoints) of one saturn deployment."""

    def __init__(self, url: Optional[str] = None, db: Optional[str] = None):
        self.url = str(url or default_store_url())
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        db = db or settings.store_db()
        if not db:
            if not self.local:
                raise SaturnInputError(
                    f"store {self.url} is not a local folder, so it cannot hold the SQLite record database: "
                    "set [saturn] store_db (e.g. postgresql://user:pw@host/saturn) or [saturn] store_conn_id")
            db = database.sqlite_url(self.root)
        self.db_url = database.normalize_url(db)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, db={database.redact(self.db_url)!r})"

    # ------------------------------------------------------------------ where things are
    @property
    def engine(self):
        return database.engine_for(self.db_url)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def local_path(self, *parts: str) -> str:
        """A real filesystem path under the store folder; only for local stores."""
        if not self.local:
            raise ValueError(f"store {self.url} is not a local folder")
        return os.path.join(self.root, *parts)

    def checkpoint_root(self) -> str:
        """[saturn] checkpoint_url, else <store>/checkpoints: where every job's checkpoints live."""
        configured = settings.checkpoint_url()
        if configured:
            return configured
        return self.url.rstrip("/") + "/checkpoints" if "://" in self.url else os.path.join(self.url, "checkpoints")

    def env(self) -> dict[str, str]:
        """Environment that makes a child process (a runner) open this very store."""
        return {"AIRFLOW__SATURN__STORE_URL": self.url, "AIRFLOW__SATURN__STORE_DB": self.db_url}

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def begin(self) -> Iterator[Any]:
        """A write transaction: everything inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def connection(self, conn=None, write: bool = False) -> Iterator[Any]:
        if conn is not None:
            yield conn
        elif write:
            with self.engine.begin() as c:
                yield c
        elif database.unwritten_sqlite(self.db_url):  # reading creates no file
            with database.empty_connection() as c:
                yield c
        else:
            with self.engine.connect() as c:
                c.execution_options(**database.read_options())
                with c.begin():
                    yield c

    # ------------------------------------------------------------------ documents
    def write_json(self, rel: str, obj: Any, conn=None) -> None:
        """Create or replace the document `rel` (one statement: readers see the old or the new body)."""
        t = database.tables()["documents"]
        now = time.time()
        body = json.dumps(obj)
        with self.connection(conn, write=True) as c:
            database.upsert(c, t, {"key": _key(rel), "body": body, "created_at": now, "updated_at": now},
                            {"body": body, "updated_at": now})

    def create_json(self, rel: str, obj: Any, conn=None) -> bool:
        """Create `rel` only if it does not exist yet; True for exactly one of any racing callers."""
        t = database.tables()["documents"]
        now = time.time()
        with self.connection(conn, write=True) as c:
            return database.insert_ignore(c, t, {"key": _key(rel), "body": json.dumps(obj), "created_at": now,
                                                 "updated_at": now})

    def read_json(self, rel: str, default: Any = None, conn=None) -> Any:
        sa = database.sqlalchemy()
        t = database.tables()["documents"]
        with self.connection(conn) as c:
            body = c.execute(sa.select(t.c.body).where(t.c.key == _key(rel))).scalar()
        return default if body is None else json.loads(body)

    def exists(self, rel: str) -> bool:
        sa = database.sqlalchemy()
        t = database.tables()["documents"]
        with self.connection() as c:
            return c.execute(sa.select(t.c.key).where(t.c.key == _key(rel))).first() is not None

    def delete(self, rel: str, conn=None) -> bool:
        sa = database.sqlalchemy()
        t = database.tables()["documents"]
        with self.connection(conn, write=True) as c:
            return c.execute(sa.delete(t).where(t.c.key == _key(rel))).rowcount > 0

    def read_all(self, rel_dir: str) -> dict[str, Any]:
        """name -> body of every document directly under `rel_dir`, sorted by name."""
        sa = database.sqlalchemy()
        t = database.tables()["documents"]
        prefix = _key(rel_dir) + "/"
        with self.connection() as c:
            rows = c.execute(sa.select(t.c.key, t.c.body).where(database.prefix_range(t.c.key, prefix))
                             .order_by(t.c.key)).all()
        out = {}
        for k, body in rows:
            name = k[len(prefix):]
            if "/" not in name:
                out[name] = json.loads(body)
        return out

    def list(self, rel_dir: str, suffix: str = ".json") -> list[str]:
        """Names of the documents directly under `rel_dir`, sorted (`suffix` is accepted for old callers)."""
        sa = database.sqlalchemy()
        t = database.tables()["documents"]
        prefix = _key(rel_dir) + "/"
        with self.connection() as c:
            names = c.execute(sa.select(t.c.key).where(database.prefix_range(t.c.key, prefix))
                              .order_by(t.c.key)).scalars().all()
        return [n[len(prefix):] for n in names if "/" not in n[len(prefix):]]

    # ------------------------------------------------------------------ append-only logs
    def append(self, stream: str, record: dict, conn=None) -> int:
        """Append one record to `stream`; returns its sequence number (a total order over all streams).

        The row's time is the database's clock unless the record carries its own `t`."""
        t = database.tables()["log"]
        with self.connection(conn, write=True) as c:
            at = float(record["t"]) if record.get("t") is not None else database.now(c)
            body = {k: v for k, v in record.items() if k != "t"}
            res = c.execute(t.insert().values(stream=stream, t=at, body=json.dumps(body)))
            return int(res.inserted_primary_key[0])

    def read_log(self, stream: str, after_seq: int = 0) -> list[dict]:
        """Every record of `stream` in append order, each with its `t` and `seq`."""
        sa = database.sqlalchemy()
        t = database.tables()["log"]
        with self.connection() as c:
            rows = c.execute(sa.select(t.c.seq, t.c.t, t.c.body).where(t.c.stream == stream, t.c.seq > after_seq)
                             .order_by(t.c.seq)).all()
        return [{"t": at, **json.loads(body), "seq": seq} for seq, at, body in rows]


class PlanStore:
    """Versioned, immutable plans; a plan is never rewritten, only superseded by a child."""

    def __init__(self, store: Optional[Store] = None):
        self.store = store or Store()

    def publish(self, plan: Plan) -> Plan:
        """Store `plan` for good, with its sweep filled in (a root starts one, a child joins its
        parent's), and for a child mark its parent superseded: both or neither."""
        if plan.sweep_id is None:
            plan = plan.model_copy(update={"sweep_id": self.sweep_of(plan.parent_plan_id) if plan.parent_plan_id
                                           else plan.plan_id})
        with self.store.begin() as conn:
            if not self.store.create_json(keys.plan(plan.plan_id), plan.model_dump(mode="json"), conn=conn):
                raise FileExistsError(f"plan {plan.plan_id} already published (plans are immutable)")
            if plan.parent_plan_id:
                self.supersede(plan.parent_plan_id, by=plan.plan_id, conn=conn)
        return plan

    def get(self, plan_id: str) -> Plan:
        data = self.store.read_json(keys.plan(plan_id))
        if data is None:
            raise NotFoundError(f"no plan {plan_id!r} in {self.store.url}")
        return self._with_sweep(parse_plan(data, source=f"plan {plan_id}"))

    def _with_sweep(self, plan: Plan) -> Plan:
        if plan.sweep_id is None and plan.parent_plan_id:  # published before plans recorded their sweep
            plan = plan.model_copy(update={"sweep_id": self.sweep_of(plan.parent_plan_id)})
        return plan

    def sweep_of(self, plan_id: str) -> str:
        """The sweep of a published plan; a parent that is not in the store is taken as the root."""
        try:
            return self.get(plan_id).sweep
        except NotFoundError:
            return plan_id

    def ids(self) -> list[str]:
        return self.store.list("plans")

    def plans(self) -> Iterator[Plan]:
        for pid, data in self.store.read_all("plans").items():
            yield self._with_sweep(parse_plan(data, source=f"plan {pid}"))

    def supersede(self, plan_id: str, by: str, conn=None) -> None:
        self.store.create_json(keys.superseded(plan_id), {"plan_id": plan_id, "by": by, "at": time.time()}, conn=conn)

    def superseded_by(self, plan_id: str) -> Optional[str]:
        rec = self.store.read_json(keys.superseded(plan_id))
        return rec["by"] if rec else None

    def claim(self, name: str, owner: dict) -> bool:
        """Create-once claim, e.g. `replan-of-<plan_id>`: exactly one caller ever gets True."""
        return self.store.create_json(keys.claim(name), {**owner, "at": time.time()})

    def claim_holder(self, name: str) -> Optional[dict]:
        return self.store.read_json(keys.claim(name))

    def lineage(self, plan_id: str) -> list[Plan]:
        """The plan and its ancestors, oldest first."""
        chain: list[Plan] = []
        pid: Optional[str] = plan_id
        while pid:
            p = self.get(pid)
            chain.append(p)
            pid = p.parent_plan_id
        return list(reversed(chain))


class ProgressStore:
    """Latest progress record per job of one sweep: step, total, rate, timestamps, state, plan_id.

    States and fields: saturn_airflow.spec.progress (ProgressRecord, JobState). A record is replaced
    whole on every write. Each sweep has its own records, so a job done in one sweep is still to do in
    the next.
    """

    def __init__(self, store: Optional[Store] = None, *, sweep: str):
        self.store = store or Store()
        self.sweep = sweep

    def put(self, workload: str, job: str, record: dict) -> None:
        self.store.write_json(keys.progress(workload, self.sweep, job),
                              {**record, "job": job, "workload": workload, "sweep": self.sweep})

    def get(self, workload: str, job: str) -> Optional[dict]:
        return self.store.read_json(keys.progress(workload, self.sweep, job))

    def mark_ended(self, workload: str, job: str, *, state: str, plan_id: str, message: str, **fields: Any) -> None:
        """Record that a job's attempt ended where the runner could not say so itself (killed, or failed
        before it started): `interrupted` (a retry resumes it) or `failed` (for good, so the drift
        watch counts the job as finished instead of waiting forever)."""
        now = time.time()
        rec = self.get(workload, job) or {}
        self.put(workload, job, {**rec, **fields, "plan_id": plan_id, "state": str(state), "updated_at": now,
                                 "finished_at": now, "error": message[:500]})

    def mark_failed(self, workload: str, job: str, *, plan_id: str, message: str, **fields: Any) -> None:
        self.mark_ended(workload, job, state="failed", plan_id=plan_id, message=message, **fields)

    def all(self, workload: str) -> dict[str, dict]:
        return self.store.read_all(keys.progress_dir(workload, self.sweep))
