"""The plugin app's routes in process (auth overridden; tests/plugins/test_plugin_auth.py checks auth)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from saturn_airflow.views.gantt_html import store_context
from saturn_airflow.store.records import PlanStore

from . import sample

app_mod = pytest.importorskip("saturn_airflow.plugins.app")


@pytest.fixture
def client(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    sample.publish(url)
    monkeypatch.setenv("SATURN_HOME", url)
    app_mod._CONTEXT.clear()
    app_mod.app.dependency_overrides[app_mod.authorize] = lambda: None
    yield TestClient(app_mod.app)
    app_mod.app.dependency_overrides.clear()


def test_plan_for_dag():
    assert app_mod.plan_for_dag("saturn_run__demo-v1", ["demo-v1", "demo-v2"]) == "demo-v1"
    assert app_mod.plan_for_dag("saturn_plan", ["demo-v1"]) is None
    assert app_mod.plan_for_dag("saturn_run__gone", ["demo-v1"]) is None


def test_index_lists_latest_lineage_and_dag_tab_shows_chart(client):
    index = client.get("/").text
    assert "demo-v2" in index and "plan?plan_id=demo-v2" in index
    assert "<td>3/6</td>" in index  # jobs done over the whole sweep (a, e, c)
    assert index.count('class="bar planned"') > 0 and index.count("<body>") == 1  # the newest chart below
    assert client.get("/?dag_id=saturn_plan").text == index  # the planning DAG's tab: the list
    tab = client.get("/?dag_id=saturn_run__demo-v1").text  # an old plan's DAG follows its re-plans
    assert tab.count('class="bar planned"') == 4 + 2 + 1 + 1 + 2 + 2 + 2 + 1 + 1 + 2
    assert 'href="/dags/saturn_run__demo-v2" target="_top"' in tab
    only = client.get("/plan?plan_id=demo-v1&latest=false").text
    assert 'data-plan="demo-v2"' not in only


def test_json_api_uses_the_table(client):
    plans = client.get("/api/plans").json()["plans"]
    assert {p["plan_id"]: p["superseded_by"] for p in plans} == {"demo-v1": "demo-v2", "demo-v2": None}
    assert plans[0]["dag_id"] == "saturn_run__demo-v1"
    data = client.get("/api/plans/demo-v2").json()
    assert [p["plan_id"] for p in data["plans"]] == ["demo-v1", "demo-v2"]
    assert data["sweep"]["baseline_makespan_s"] > 0
    assert len(data["plans"][0]["lanes"]) == 6
    assert client.get("/api/plans/nope").status_code == 404
    assert client.get("/plan?dag_id=some_other_dag").status_code == 404


def test_store_context_current_practice(tmp_path):
    st = sample.publish(str(tmp_path / "s"))
    cluster, base = store_context(st, PlanStore(st).lineage("demo-v2"))
    assert [n.gpus for n in cluster.nodes] == [4, 2]
    from saturn_airflow.planner import plan_table

    assert base == pytest.approx(plan_table(sample.table(), baseline="current-practice").makespan_s)
    bare = sample.publish(str(tmp_path / "t"), with_table=False)
    assert store_context(bare, PlanStore(bare).lineage("demo-v2")) == (None, None)


def test_authorize_asks_about_the_plans_dag(tmp_path, monkeypatch):
    """The auth manager is asked about the DAG of the plan being read (so per-DAG access applies)."""
    pytest.importorskip("airflow.api_fastapi.core_api.security")
    import airflow.api_fastapi.app as af_app
    import airflow.api_fastapi.core_api.security as security

    asked = []

    class FakeAuthManager:
        def is_authorized_dag(self, *, method, details, user, access_entity=None):
            asked.append((method, details.id))
            return details.id != "saturn_run__demo-v1"

    async def fake_get_user(request, _oauth, creds):
        return "someone"

    url = str(tmp_path / "store")
    sample.publish(url)
    monkeypatch.setenv("SATURN_HOME", url)
    monkeypatch.setattr(af_app, "get_auth_manager", lambda: FakeAuthManager())
    monkeypatch.setattr(security, "get_user", fake_get_user)
    c = TestClient(app_mod.app)
    assert c.get("/api/plans/demo-v2").status_code == 200
    assert c.get("/plan?plan_id=demo-v1").status_code == 403
    assert c.get("/?dag_id=saturn_run__demo-v1").status_code == 403
    assert c.get("/api/plans").status_code == 200
    assert asked == [("GET", "saturn_run__demo-v2"), ("GET", "saturn_run__demo-v1"), ("GET", "saturn_run__demo-v1"),
                     ("GET", None)]


def test_a_second_sweep_of_the_workload_shows_its_own_progress(client, tmp_path):
    """The planning DAG run again: the newest sweep is listed with none of the first sweep's jobs done."""
    from saturn_airflow.store.files import ProgressStore, Store

    st = Store(str(tmp_path / "store"))
    v1 = sample.lineage()[0]
    again = PlanStore(st).publish(v1.model_copy(update={"plan_id": "demo-again", "created_at": "2027-01-16T08:00:00+00:00"}))
    assert again.sweep == "demo-again"
    index = client.get("/").text
    assert "plan?plan_id=demo-again" in index and "<td>0/6</td>" in index
    assert client.get("/api/plans/demo-again").json()["sweep"]["jobs_done"] == 0
    assert client.get("/api/plans/demo-v2").json()["sweep"]["jobs_done"] == 3  # the first sweep as it was
    ProgressStore(st, sweep=again.sweep).put("demo", "a", {**sample.progress()["a"], "plan_id": "demo-again"})
    assert client.get("/api/plans/demo-again").json()["sweep"]["jobs_done"] == 1


def test_plan_page_and_api_show_the_leaderboard_with_the_winner(client, tmp_path):
    sample.publish_results(str(tmp_path / "store"))
    page = client.get("/plan?plan_id=demo-v1").text  # follows to v2: the whole sweep's jobs
    assert page.count(' data-rank=') == 6 and page.count('data-winner="true"') == 1
    assert '<tr data-job="c" data-rank="1" data-state="done" data-winner="true"' in page
    assert page.count('<polyline class="curve') == 2 * 4  # loss and accuracy, one line per job with points
    assert page.index('class="results"') < page.index("<h2>Lineage</h2>")
    assert 'class="results"' in client.get("/").text  # the Browse page's newest chart has it too
    data = client.get("/api/plans/demo-v1/results").json()
    assert data["winner"]["job"] == "c" and data["varying"] == ["optimizer.lr"]
    assert [r["job"] for r in data["sections"][0]["rows"]][:3] == ["c", "a", "e"]
