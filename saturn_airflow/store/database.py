"""The record database behind the store: one SQLAlchemy schema for SQLite (one machine) and PostgreSQL
(a cluster), so every process on every host sees the same plans, progress, leases, claims and events.

Three tables, all prefixed `saturn_` so they can live beside other applications' tables:
  saturn_documents  key -> JSON body (plans, progress records, claims, staged plans, profile cache...)
  saturn_leases     key -> holder token, holder identity, owner JSON, heartbeat time, time to live
  saturn_log        append-only (stream, time, JSON body) rows: the lease history and the job events

Concurrency: SQLite runs in WAL mode and every write transaction starts with BEGIN IMMEDIATE (one
writer at a time, readers never blocked, no "database is locked" upgrade failures); PostgreSQL runs
at READ COMMITTED, and every decision that must have one winner is a single conditional statement
(INSERT ... ON CONFLICT DO NOTHING, UPDATE ... WHERE token = old) whose row count says who won.
Times that decide lease expiry come from the database's clock (`now`), never from a host's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Any, Iterator

from saturn_airflow.errors import SaturnInputError

SQLITE_FILE = "saturn.db"
_READ_ONLY = "saturn_read_only"  # execution option: a plain read, no BEGIN IMMEDIATE on SQLite

_lock = threading.Lock()
_engines: dict[str, Any] = {}
_schema_ready: set[str] = set()
_tables: dict[str, Any] = {}


def sqlalchemy():
    """SQLAlchemy, imported on first use (the engine's light modules never pay for it at import)."""
    import sqlalchemy as sa

    return sa


def tables() -> dict[str, Any]:
    """The schema (built once per process; SQLAlchemy is imported only when a store is used)."""
    if _tables:
        return _tables
    sa = sqlalchemy()
    md = sa.MetaData()
    _tables["metadata"] = md
    _tables["documents"] = sa.Table(
        "saturn_documents", md,
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    _tables["leases"] = sa.Table(
        "saturn_leases", md,
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(512), nullable=False),  # host identity of the holding process
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_start", sa.String(32)),
        sa.Column("pgroup", sa.Integer),  # the process group the holder launched on the devices (same host)
        sa.Column("owner", sa.Text, nullable=False),  # JSON: job, plan_id, node, dag_run, ...
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("ttl_s", sa.Float, nullable=False),
    )
    _tables["log"] = sa.Table(
        "saturn_log", md,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(512), nullable=False, index=True),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    return _tables


def sqlite_url(folder: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(folder), SQLITE_FILE)


def normalize_url(url: str) -> str:
    """Accept the spellings people paste (postgres://, an Airflow connection URI) as SQLAlchemy URLs."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql+psycopg2://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sqlalchemy().engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper never raises
        return url.split("@")[-1]


def _make_engine(url: str):
    sa = sqlalchemy()
    try:
        parsed = sa.engine.make_url(url)
    except Exception as e:  # noqa: BLE001
        raise SaturnInputError(f"store database URL {url!r} is not a SQLAlchemy URL: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                  poolclass=sa.pool.NullPool)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")
    else:
        try:
            engine = sa.create_engine(url, pool_size=2, max_overflow=4, pool_pre_ping=True, pool_recycle=1800)
        except ModuleNotFoundError as e:
            raise SaturnInputError(f"store database {redact(url)}: driver missing ({e.name}); install the "
                                   "'cluster' extra (psycopg2-binary) for PostgreSQL") from None
    return engine


def engine_for(url: str):
    """One engine per database URL per process (rebuilt in a forked child), with the schema created."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _make_engine(url)
        if url not in _schema_ready:
            _create_schema(engine, url)
            _schema_ready.add(url)
    return engine


def _create_schema(engine, url: str) -> None:
    sa = sqlalchemy()
    md = tables()["metadata"]
    for attempt in range(3):  # two processes creating the tables at once: the loser retries and finds them
        try:
            md.create_all(engine, checkfirst=True)
            return
        except sa.exc.OperationalError as e:
            if attempt == 2 or "already exists" not in str(e).lower() and "locked" not in str(e).lower():
                raise SaturnInputError(f"store database {redact(url)} is unreachable: {str(e).splitlines()[0]}") from None
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            if attempt == 2:
                raise


def _forget_engines_after_fork() -> None:
    # a forked child must not share its parent's connections (SQLite file handles, PostgreSQL sockets)
    for engine in _engines.values():
        try:
            engine.dispose(close=False)
        except Exception:  # noqa: BLE001
            pass
    _engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engines_after_fork)


@functools.lru_cache(maxsize=64)
def _sqlite_file(url: str) -> str:
    """The file of a SQLite URL ('' for another database or an in-memory one)."""
    if not url.startswith("sqlite:"):
        return ""
    path = sqlalchemy().engine.make_url(url).database or ""
    return "" if path == ":memory:" else path


def unwritten_sqlite(url: str) -> bool:
    """A SQLite database whose file does not exist yet: nothing was ever written to this store."""
    path = _sqlite_file(url)
    return bool(path) and not os.path.exists(path)


@contextlib.contextmanager
def empty_connection() -> Iterator[Any]:
    """A read of an empty database with the schema (in memory, this call's own): what a store that was
    never written holds, read without creating its file, so a command that fails on bad input after
    looking at the store leaves nothing behind."""
    engine = sqlalchemy().create_engine("sqlite://")
    try:
        tables()["metadata"].create_all(engine)
        with engine.connect() as c, c.begin():
            yield c
    finally:
        engine.dispose()


def read_options() -> dict:
    return {_READ_ONLY: True}


def now(conn) -> float:
    """Epoch seconds on the database's clock (one clock for every host's lease decisions)."""
    sa = sqlalchemy()
    if conn.dialect.name == "sqlite":
        return float(conn.execute(sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")).scalar())
    if conn.dialect.name == "postgresql":
        return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar())
    import time

    return time.time()


def insert_ignore(conn, table, values: dict) -> bool:
    """INSERT unless the primary key exists (ON CONFLICT DO NOTHING); True if this call inserted the row."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return conn.execute(insert(table).values(**values).on_conflict_do_nothing()).rowcount == 1


def upsert(conn, table, values: dict, update: dict) -> None:
    """INSERT, or UPDATE the given columns when the primary key exists (one statement, no race)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[c.name for c in table.primary_key], set_=update))


def prefix_range(column, prefix: str):
    """`column` starts with `prefix` as an index range (no LIKE: names may contain '_' or '%')."""
    sa = sqlalchemy()
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return sa.and_(column >= prefix, column < upper)


def dispose(url: str) -> None:
    """Close this process's connections to `url` (tests that drop or abandon a database)."""
    with _lock:
        engine = _engines.pop(url, None)
        _schema_ready.discard(url)
    if engine is not None:
        engine.dispose()
