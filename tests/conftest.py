"""Tests that import Airflow get a throwaway AIRFLOW_HOME (never the user's ~/airflow)."""

import os
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="saturn-test-airflow-home-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


# ---- the store's two database backends: every store and lease test runs on both ------------------
import importlib.util  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A module from scripts/ (they are not a package)."""
    spec = importlib.util.spec_from_file_location(f"saturn_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A PostgreSQL server of the test session's own (Debian's binaries, loopback, a free port).

    Skipped where PostgreSQL is not installed, unless SATURN_REQUIRE_POSTGRES=1 (scripts/test.sh)."""
    cluster = load_script("cluster")
    try:
        cluster.pg_bindir()
    except RuntimeError as e:
        if os.environ.get("SATURN_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(str(e))
    server = cluster.Postgres(str(tmp_path_factory.mktemp("pg")), cluster.free_port())
    server.start()
    server.create_database("saturn")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request, tmp_path):
    """A fresh, empty record database: None (the store's SQLite file) or a PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name} OWNER saturn")
    url = f"postgresql+psycopg2://saturn:saturn@127.0.0.1:{server.port}/{name}"
    yield url
    from saturn_airflow.store import database

    database.dispose(url)


@pytest.fixture
def store(store_db, tmp_path):
    from saturn_airflow.store.records import Store

    return Store(str(tmp_path), db=store_db)
