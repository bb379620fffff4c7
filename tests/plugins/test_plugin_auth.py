"""The plugin's API through the real api-server app and auth manager: 401 without a token, 403 with
a bad one or without a role, 200 for a logged-in user (Bearer or the UI's `_token` cookie)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saturn_airflow.store.records import PlanStore, ProgressStore, Store

from . import sample

pytest.importorskip("airflow.api_fastapi")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    st = Store(str(home / "saturn"))
    for p in sample.lineage():
        PlanStore(st).publish(p)
    for job, rec in sample.progress().items():
        ProgressStore(st, sweep=sample.SWEEP).put("demo", job, rec)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__SATURN__STORE_URL": str(home / "saturn"), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-" + "x" * 32}
    env.pop("SATURN_HOME", None)
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("_auth_probe.py")), "demo-v1"],
                       env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    return json.loads(line[0][len("RESULT "):])


def test_refuses_without_valid_airflow_auth(probe):
    for path in ("/saturn/", "/saturn/api/plans", "/saturn/api/plans/demo-v1", "/saturn/plan?plan_id=demo-v1"):
        codes = probe[path]
        assert codes["none"] == 401, (path, codes)
        assert codes["bad_bearer"] == 403 and codes["bad_cookie"] == 403, (path, codes)
        assert codes["no_role"] == 403, (path, codes)
        assert codes["viewer"] == 200 and codes["admin_cookie"] == 200, (path, codes)


def test_serves_chart_and_registers_views(probe):
    assert probe["bars"] == sum(len(a.gpu_ids) for p in sample.lineage() for a in p.assignments)
    assert {p["plan_id"] for p in probe["api"]["plans"]} == {"demo-v1", "demo-v2"}
    assert probe["import_errors"]["total_entries"] == 0, probe["import_errors"]
    [plugin] = probe["plugins"]  # registered once (the airflow.plugins entry point)
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["dag"]["url_route"] and "{DAG_ID}" in views["dag"]["href"]
    assert views["nav"]["href"] == "/saturn/"
