"""The self-contained Gantt page: a bar per job per GPU lane, actual slots by state, makespans, lineage."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from saturn_airflow.spec.cluster import Cluster, Node
from saturn_airflow.views.gantt_html import chart_data, fmt_s, render_html

from tests.plugins import sample


class Bars(HTMLParser):
    """Collect the data-* attributes of every bar, lane and section."""

    def __init__(self):
        super().__init__()
        self.bars, self.lanes, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        cls = (a.get("class") or "").split()
        if "bar" in cls:
            self.bars.append({**a, "kind": "planned" if "planned" in cls else "actual"})
        if "lane" in cls:
            self.lanes.append((a["data-node"], int(a["data-gpu"])))


def parse(page: str) -> Bars:
    p = Bars()
    p.feed(page)
    return p


def test_one_planned_bar_per_job_per_gpu_lane():
    plans = sample.lineage()
    page = render_html(plans, sample.progress(), 260.0, now=sample.T0 + 130)
    got = parse(page)
    for plan in plans:
        bars = [b for b in got.bars if b["kind"] == "planned" and b["data-plan"] == plan.plan_id]
        expect = sorted((a.job, a.node, g) for a in plan.assignments for g in a.gpu_ids)
        assert sorted((b["data-job"], b["data-node"], int(b["data-gpu"])) for b in bars) == expect
    # lanes: every GPU of every node the plan uses, per plan section
    assert set(got.lanes) == {("node0", g) for g in range(4)} | {("node1", 0), ("node1", 1)}


def test_actual_bars_follow_records_and_states():
    page = render_html(sample.lineage(), sample.progress(), now=sample.T0 + 130)
    actual = [b for b in parse(page).bars if b["kind"] == "actual"]
    by_job = {}
    for b in actual:
        by_job.setdefault(b["data-job"], set()).add((b["data-plan"], b["data-node"], int(b["data-gpu"]), b["data-state"]))
    assert by_job["a"] == {("demo-v1", "node0", g, "done") for g in range(4)}
    assert by_job["e"] == {("demo-v1", "node1", 0, "done"), ("demo-v1", "node1", 1, "done")}
    assert by_job["b"] == {("demo-v2", "node0", 0, "running"), ("demo-v2", "node0", 1, "running")}
    assert by_job["d"] == {("demo-v2", "node0", 3, "failed")}
    assert "f" not in by_job  # not started
    assert 'class="eta"' in page  # the running job's projected remainder


def test_makespans_lineage_and_reason():
    data = chart_data(sample.lineage(), sample.progress(), 260.0, now=sample.T0 + 130)
    sw = data["sweep"]
    assert sw["planned_makespan_s"] == 130.0 and sw["lower_bound_s"] == 100.0 and sw["baseline_makespan_s"] == 260.0
    assert sw["actual_makespan_s"] is None and sw["projected_makespan_s"] > 130.0
    assert [p["version"] for p in data["plans"]] == [1, 2]
    page = render_html(sample.lineage(), sample.progress(), 260.0, now=sample.T0 + 130)
    assert "job a ran 40% slower than profiled" in page
    assert "50% below current practice" in page
    assert re.search(r'data-metric="baseline" data-seconds="260', page)


def test_finished_single_plan_reports_actual_makespan():
    plan = sample.lineage()[0]
    recs = {a.job: {"plan_id": plan.plan_id, "state": "done", "started_at": sample.T0 + a.start_s,
                    "finished_at": sample.T0 + a.end_s + 5, "step": 10, "total": 10, "device_ids": a.gpu_ids}
            for a in plan.assignments}
    data = chart_data([plan], recs, now=sample.T0 + 999)
    assert data["sweep"]["actual_makespan_s"] == pytest.approx(135.0)
    assert data["plans"][0]["summary"]["jobs_done"] == 6


def test_cluster_gives_idle_lanes_and_page_is_self_contained():
    plan = sample.lineage()[0]
    cl = Cluster(nodes=[Node(name="node0", gpus=8), Node(name="node1", gpus=2)])
    page = render_html([plan], None, cluster=cl)
    assert len(parse(page).lanes) == 10
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_escapes_names_and_handles_no_plans():
    plan = sample.lineage()[0]
    evil = plan.model_copy(update={"workload": "<script>x</script>"})
    assert "<script>x" not in render_html([evil])
    assert "No plans yet" in render_html([])


@pytest.mark.parametrize("s,out", [(0, "0s"), (42, "42s"), (125, "2m05s"), (3720, "1h02m"), (None, "-")])
def test_fmt_s(s, out):
    assert fmt_s(s) == out


def test_records_of_another_lineage_are_ignored():
    plans = sample.lineage()
    stale = {"f": {"plan_id": "older-sweep", "state": "done", "started_at": sample.T0, "finished_at": sample.T0 + 9}}
    data = chart_data(plans, {**sample.progress(), **stale}, now=sample.T0 + 130)
    assert "f" not in {s["job"] for p in data["plans"] for s in p["actual"]}


def test_eta_follows_the_recent_rate_when_the_record_has_one():
    recs = sample.progress()
    now = sample.T0 + 130

    def span_b(records):
        v2 = chart_data(sample.lineage(), records, now=now)["plans"][1]
        return next(s for s in v2["actual"] if s["job"] == "b")

    base = span_b(recs)
    recs["b"] = {**recs["b"], "recent_rate_steps_per_s": 0.5}  # slowed down to half its average pace
    slow = span_b(recs)
    assert slow["eta_end_s"] - slow["end_s"] == pytest.approx(2 * (base["eta_end_s"] - base["end_s"]))
    assert "0.50/s now, 1.00/s avg" in render_html(sample.lineage(), recs, now=now)


def test_a_job_failed_for_good_is_named_with_its_reason():
    recs = sample.progress()
    recs["d"] = {**recs["d"], "error": "RuntimeError: injected failure at step 10"}
    data = chart_data(sample.lineage(), recs, now=sample.T0 + 130)
    assert data["sweep"]["failed"] == {"d": "RuntimeError: injected failure at step 10"}
    page = render_html(sample.lineage(), recs, now=sample.T0 + 130)
    assert 'class="failed-jobs"' in page and "<b>d</b>: RuntimeError: injected failure at step 10" in page
    recs["d"] = {**recs["d"], "state": "done", "finished_at": sample.T0 + 125}  # cleared and resumed: no banner
    assert 'class="failed-jobs"' not in render_html(sample.lineage(), recs, now=sample.T0 + 130)


def test_the_projected_makespan_is_the_drift_watchs_projection():
    from saturn_airflow.control.drift import assess

    plans, recs = sample.lineage(), sample.progress()
    now = sample.T0 + 130
    v2 = chart_data(plans, recs, now=now)["plans"][1]
    origin = v2["origin_epoch_s"]
    attached = {j: r for j, r in recs.items() if j in {a.job for a in plans[1].assignments}}
    rep = assess(plans[1], attached, now, origin)
    assert v2["summary"]["projected_makespan_s"] == pytest.approx(rep.projected_makespan_s)
