"""The Gantt view in a real browser: headless Chromium logs in to a running Airflow, opens the
'Saturn plan' tab of a finished plan's DAG and the Browse page, and checks through the DOM that the
chart shows one planned bar per job on each of its GPU lanes, and the actual slots as done, and that
the leaderboard ranks every job with the winner marked and draws each job's metric curves.
Screenshots go to artifacts/ (kept by CI).

Needs the Debian `chromium` package (scripts/setup-browser.sh). Runs the tiny example sweep through the real
planning DAG and plan DAG (tests/e2e/airflow_harness.py), a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from airflow_harness import ROOT, AirflowHarness  # noqa: E402
from browser import Browser, chromium_path  # noqa: E402
from ui_check import IFRAME_DOC, gantt_bars, leaderboard_rows, login, open_plugin_page  # noqa: E402

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "artifacts"

WORKLOAD = ROOT / "saturn_airflow" / "examples" / "tiny.yaml"  # 4 small jobs, 1-2 minutes on 2 cores


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A running Airflow in which the planning DAG planned WORKLOAD and the plan's DAG finished."""
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: run scripts/setup-browser.sh in CI")
        pytest.skip("chromium is missing (scripts/setup-browser.sh installs it)")
    with AirflowHarness() as af:
        from saturn_airflow.tasks.render import PLANNING_DAG_ID, dag_id
        from saturn_airflow.store.records import PlanStore, Store

        af.wait_dag(PLANNING_DAG_ID)
        run_id = af.trigger(PLANNING_DAG_ID, {"workload": str(WORKLOAD), "time_limit": 10})
        assert af.wait_run(PLANNING_DAG_ID, run_id, timeout_s=900) == "success", af.log_tail("scheduler")
        ps = PlanStore(Store(af.saturn_home))
        [root] = ps.ids()
        # wait for the plan's DAG and for any drift re-plan (a loaded CI machine may drift) to finish
        newest, deadline = None, time.time() + 1500
        while newest is None:
            assert time.time() < deadline, "the sweep did not finish"
            pid = root
            while ps.superseded_by(pid):
                pid = ps.superseded_by(pid)
            run = af.wait_first_run(dag_id(pid), timeout_s=300)
            state = af.wait_run(dag_id(pid), run["dag_run_id"], timeout_s=900)
            assert state == "success", [(t["task_id"], t["state"]) for t in af.task_instances(dag_id(pid), run["dag_run_id"])]
            busy = [r for r in af.runs(PLANNING_DAG_ID) if r["state"] not in ("success", "failed")]
            if not busy and ps.superseded_by(pid) is None:
                newest = pid
            time.sleep(2)
        yield af, ps.lineage(newest)


def test_gantt_tab_of_a_finished_plan(finished_sweep):
    af, lineage = finished_sweep
    plan = lineage[-1]  # the chart's open section: the newest version (the only one without drift)
    from saturn_airflow.tasks.render import dag_id

    import httpx

    for path in ("/saturn/api/plans", f"/saturn/?dag_id={dag_id(plan.plan_id)}"):  # open only with Airflow auth
        assert httpx.get(af.url + path, timeout=30).status_code == 401
        assert httpx.get(af.url + path, headers={"Authorization": "Bearer x.y.z"}, timeout=30).status_code == 403
    ARTIFACTS.mkdir(exist_ok=True)
    t0 = time.time()
    with Browser(width=1400, height=1000) as b:
        login(b, af.url, "admin", af.password())
        page = open_plugin_page(b, f"{af.url}/dags/{dag_id(plan.plan_id)}/plugin/saturn-plan")
        assert page["iframe_src"].endswith(f"/saturn/?dag_id={dag_id(plan.plan_id)}"), page
        b.screenshot(ARTIFACTS / "gantt-dag-tab.png")
        bars = [x for x in gantt_bars(b) if x["plan"] == plan.plan_id]
        planned = sorted((x["job"], x["node"], x["gpu"]) for x in bars if x["kind"] == "planned")
        assert planned == sorted((a.job, a.node, g) for a in plan.assignments for g in a.gpu_ids)
        for x in bars:  # each bar is drawn inside the lane of its node and GPU, and visible
            assert x["lane"] == [x["node"], x["gpu"]] and x["width"] > 0, x
        actual = {(x["job"], x["node"], x["gpu"]): x["state"] for x in bars if x["kind"] == "actual"}
        assert set(actual) == set(planned) and set(actual.values()) == {"done"}, actual
        summary = b.evaluate(f"{IFRAME_DOC}.querySelector('.sweep').innerText")
        assert "planned" in summary and "actual" in summary and "lower bound" in summary, summary
        # the leaderboard: every job of the sweep ranked by its held-out loss, the winner marked, its curves
        board = leaderboard_rows(b)
        jobs = {a.job for p in lineage for a in p.assignments}
        assert {r["job"] for r in board["rows"]} == jobs and all(r["state"] == "done" for r in board["rows"]), board
        [winner] = [r for r in board["rows"] if r["winner"]]
        assert winner["rank"] == "1" and winner["visible"], board
        assert board["curves"] == {m: sorted(jobs) for m in ("loss", "accuracy")}, board["curves"]
        b.evaluate(f"{IFRAME_DOC}.querySelector('section.results').scrollIntoView()")
        b.screenshot(ARTIFACTS / "leaderboard-dag-tab.png")

        open_plugin_page(b, f"{af.url}/plugin/saturn")
        assert plan.plan_id in b.evaluate(f"{IFRAME_DOC}.body.innerText")
        b.screenshot(ARTIFACTS / "gantt-browse.png")
    assert (ARTIFACTS / "gantt-dag-tab.png").stat().st_size > 10_000
    print(f"browser checks took {time.time() - t0:.1f} s")
