"""The plan page of a successive-halving sweep: rung lines where segments end, a cross where a job was
stopped, stopped jobs counted as finished in the sweep's makespan, and the rung table with the winner."""

import re

from saturn_airflow.control import segments as seg
from saturn_airflow.spec.early_stop import Halving
from saturn_airflow.spec.profile_table import parse_profile_table
from saturn_airflow.views.gantt_html import chart_data, render_html
from saturn_airflow.views.halving_html import halving_data, render_halving

T = 1_900_000_000.0


def sweep():
    jobs = ["a", "b", "c"]
    table = parse_profile_table({"cluster": {"nodes": [{"name": "n", "gpus": 2, "gpu_type": "cpu"}]}, "jobs": [
        {"name": j, "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 100, "startup_s": 5},
                                {"parallelism": "ddp", "gpus": 2, "runtime_s": 60, "startup_s": 5}]} for j in jobs]})
    h = Halving(metric="loss", goal="min", keep=0.5, rungs=[25], groups={"g": jobs}, steps={j: 100 for j in jobs})
    plan, _ = seg.first_plan(table, h, workload="w", solver="highs", time_limit=2)
    ids = {a.job: a.gpu_ids for a in plan.assignments}

    def rec(job, state, step, start, end):
        return {"job": job, "plan_id": plan.plan_id, "state": state, "step": step, "total": 25 if step <= 25 else 100,
                "device_ids": ids[job], "started_at": T + start, "updated_at": T + end, "finished_at": T + end}

    progress = {"a": rec("a", "done", 100, 0, 90), "b": rec("b", "stopped", 25, 0, 30), "c": rec("c", "done", 100, 30, 120)}
    pts = {"a": {25: 0.5, 100: 0.2}, "b": {25: 0.9}, "c": {25: 0.4, 100: 0.3}}
    metrics = {j: {"points": [{"step": s, "values": {"loss": v}, "plan_id": plan.plan_id} for s, v in p.items()]}
               for j, p in pts.items()}
    return plan, progress, metrics


def test_rung_lines_stop_marks_and_stopped_counts_as_finished():
    plan, progress, metrics = sweep()
    page = render_html([plan], progress, now=T + 200)
    assert set(re.findall(r'<line class="rung" data-job="([abc])" data-rung="25"', page)) == {"a", "b", "c"}
    assert re.search(r'<text class="stop-mark" data-job="b"', page) and not re.search(r'stop-mark" data-job="[ac]"', page)
    assert 'data-state="stopped"' in page
    sweep_sm = chart_data([plan], progress, now=T + 200)["sweep"]
    assert sweep_sm["actual_makespan_s"] == 120 and sweep_sm["jobs_stopped"] == 1 and sweep_sm["jobs_done"] == 2
    assert "2/3 jobs done, 1 stopped early" in page


def test_the_rung_table_shows_values_where_each_job_went_and_the_winner():
    plan, progress, metrics = sweep()
    data = halving_data([plan], progress, metrics)
    g = data["groups"][0]
    assert (g["winner"], g["quotas"]) == ("a", [2])
    rows = {r["job"]: r for r in g["rows"]}
    assert rows["b"]["state"] == "stopped" and rows["b"]["where"].startswith("stopped at rung 25 (rank 3 of 3")
    assert rows["a"]["values"] == {25: 0.5} and rows["a"]["final"] == 0.2 and rows["a"]["where"] == "finished"
    html = render_halving([plan], progress, metrics)
    assert '<tr data-job="a" data-state="done"><td class="win">a &#9733; winner' in html
    assert '<tr data-job="b" data-state="stopped"><td class="stop">b' in html
    assert render_halving([plan.model_copy(update={"early_stop": None})], progress, metrics) == ""
