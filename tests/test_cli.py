"""The `saturn` command: happy paths, and the bad-input corpus (exit 2, one line naming the problem, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saturn_airflow import cli
from saturn_airflow.spec.plan import parse_plan
from saturn_airflow.spec.profile_table import load_profile_table

BAD = Path(__file__).parent / "data" / "bad_inputs"
CASES = json.loads((BAD / "cases.json").read_text())


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[f"{c['args'][0]}-{c['file']}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_file = tmp_path / "out.json"
    argv = [a.replace("{file}", str(BAD / case["file"])).replace("{out}", str(out_file)).replace("{tmp}", str(tmp_path))
            for a in case["args"]]
    code, out, err = run(argv, capsys)
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("saturn: error: ")
    assert case["expect"].lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


KINDS = {  # what is wrong, whatever the command
    "syntax": "the text does not parse", "shape": "a key is missing or the document is another shape",
    "value": "a field's value is out of range", "reference": "a name points at nothing (job, node, parallelism, device)",
    "duplicate": "a name appears twice", "name": "a name that would become an unsafe path or id",
    "file": "the file is missing, a directory, or another kind of document", "plan rule": "a plan breaks a validity rule",
    "argument": "a command-line argument is wrong", "import": "a factory that does not import",
    "size": "a size past a documented limit",
}


def test_corpus_is_large_enough_and_every_case_has_a_kind():
    assert len(CASES) >= 30
    assert len({c["file"] for c in CASES}) >= 30
    assert {c["kind"] for c in CASES} == set(KINDS)  # every case has a known kind, every kind has cases
    assert {c["args"][0] for c in CASES} >= {"plan", "profile", "show", "simulate", "train"}


def test_plan_example_writes_valid_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, stdout, _ = run(["plan", "--time-limit", "1", "-o", str(out)], capsys)
    assert code == 0
    assert "gpu0" in stdout and "lower bound" in stdout
    plan = parse_plan(out.read_text())
    from saturn_airflow.spec.plan import check_plan
    from importlib import resources

    table = load_profile_table(resources.files("saturn_airflow.examples").joinpath(cli.EXAMPLE))
    check_plan(plan, table)


@pytest.mark.parametrize("baseline", ["current-practice", "random"])
def test_plan_baseline_then_show_and_simulate(baseline, tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text((BAD / "ok_table.json").read_text())
    out = tmp_path / "p.json"
    assert run(["plan", str(table), "--baseline", baseline, "-o", str(out)], capsys)[0] == 0
    code, stdout, _ = run(["show", str(out), "--table", str(table)], capsys)
    assert code == 0 and "makespan" in stdout
    code, stdout, _ = run(["simulate", str(out), "--noise", "0.2", "--seed", "3"], capsys)
    assert code == 0 and "simulated makespan" in stdout


def test_profile_without_profiler_is_one_line(tmp_path, capsys, monkeypatch):
    wl = tmp_path / "w.yaml"
    wl.write_text("name: s\ncluster: {nodes: [{name: n0, gpus: 2}]}\njobs:\n  - {name: a, model: m.x:f, data: m.x:g, batch_size: 4, steps: 5}\n")
    monkeypatch.setitem(sys.modules, "saturn_airflow.profiling.profiler", None)  # as if not installed
    code, out, err = run(["profile", str(wl), "-o", str(tmp_path / "t.json")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "profiler" in err
    assert not (tmp_path / "t.json").exists()


def test_show_html_without_renderer_is_one_line(tmp_path, capsys, monkeypatch):
    table = tmp_path / "t.json"
    table.write_text((BAD / "ok_table.json").read_text())
    out = tmp_path / "p.json"
    assert run(["plan", str(table), "--baseline", "max-heuristic", "-o", str(out)], capsys)[0] == 0
    monkeypatch.setitem(sys.modules, "saturn_airflow.views.gantt_html", None)
    code, _, err = run(["show", str(out), "--html", str(tmp_path / "x.html")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_show_html_writes_the_real_chart_with_current_practice(tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text((BAD / "ok_table.json").read_text())
    out = tmp_path / "p.json"
    assert run(["plan", str(table), "--baseline", "max-heuristic", "-o", str(out)], capsys)[0] == 0
    html_path = tmp_path / "x.html"
    assert run(["show", str(out), "--table", str(table), "--html", str(html_path)], capsys)[0] == 0
    html = html_path.read_text()
    plan = json.loads(out.read_text())
    for a in plan["assignments"]:
        assert f'data-job="{a["job"]}"' in html
    assert "current practice" in html


def test_console_process_bad_input_has_no_traceback(tmp_path):
    """The real process, not just main(): exit status 2 and a single stderr line."""
    proc = subprocess.run([sys.executable, "-m", "saturn_airflow.cli", "plan", str(BAD / "malformed.json")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "malformed JSON" in proc.stderr


def test_show_from_a_store_names_a_failed_job_and_its_reason(tmp_path, capsys):
    from saturn_airflow.store.files import ProgressStore, Store
    from tests.plugins import sample

    sample.publish(str(tmp_path))
    prog = ProgressStore(Store(str(tmp_path)), sweep=sample.SWEEP)
    prog.put("demo", "d", {**prog.get("demo", "d"), "error": "RuntimeError: injected failure at step 10"})
    code, out, err = run(["show", "demo-v1", "--store", str(tmp_path)], capsys)  # follows re-plans to v2
    assert code == 0, err
    assert "FAILED d: RuntimeError: injected failure at step 10" in out
    assert "jobs: " in out and "re-plans 1" in out
    code, out, err = run(["show", "no-such-plan", "--store", str(tmp_path)], capsys)
    assert code == 2 and "no plan 'no-such-plan'" in err


def test_results_by_plan_id_plan_file_workload_file_and_name(tmp_path, capsys):
    """The leaderboard from a store: same rows whichever way the sweep is named; --json and --csv parse."""
    import csv
    import io

    from saturn_airflow.spec.workload import parse_workload
    from saturn_airflow.store.files import PlanStore, ProgressStore, Store
    from saturn_airflow.store.metrics import MetricsStore
    from saturn_airflow.views.leaderboard import leaderboard, render_json

    store = Store(str(tmp_path / "store"))
    text = (BAD / "evaluation_ok.yaml").read_text() + "grid: {optimizer.lr: [0.001, 0.01, 0.1]}\n"
    (tmp_path / "w.yaml").write_text(text)
    wl = parse_workload(text)
    from saturn_airflow.planner import plan_table
    from saturn_airflow.spec.profile_table import parse_profile_table

    table = parse_profile_table({"cluster": {"nodes": [{"name": "node0", "gpus": 2}]}, "jobs": [
        {"name": j.name, "configs": [{"parallelism": "ddp", "gpus": 2, "runtime_s": 10.0}]} for j in wl.jobs]})
    plan = PlanStore(store).publish(plan_table(table, baseline="current-practice", workload="sweep"))
    ms, ps = MetricsStore(store, sweep=plan.sweep), ProgressStore(store, sweep=plan.sweep)
    for i, job in enumerate(wl.jobs):
        ms.start_attempt("sweep", job, plan_id=plan.plan_id, parallelism="ddp", device_ids=[0, 1], start_step=0)
        ms.add_point("sweep", job.name, 10, {"loss": 3.0 - i, "accuracy": 0.1 * i})
        ms.end_attempt("sweep", job.name, "done", 10)
        ps.put("sweep", job.name, {"plan_id": plan.plan_id, "state": "done", "step": 10, "total": 10})
    (tmp_path / "plan.json").write_text(plan.to_json())
    outs = []
    for target in (plan.plan_id, str(tmp_path / "plan.json"), str(tmp_path / "w.yaml"), "sweep"):
        code, out, err = run(["results", target, "--store", store.url], capsys)
        assert code == 0, err
        outs.append(out)
    assert len(set(outs)) == 1 and "Winner: a-lr0.1 (loss 1 at step 10)" in outs[0]
    assert outs[0].splitlines()[2].split()[:3] == ["1*", "a-lr0.1", "done"]
    code, out, _ = run(["results", "sweep", "--store", store.url, "--json"], capsys)
    assert json.loads(out) == json.loads(render_json(leaderboard(store, "sweep", plan.sweep)))
    code, out, _ = run(["results", "sweep", "--store", store.url, "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["job"] for r in rows] == ["a-lr0.1", "a-lr0.01", "a-lr0.001"] and rows[0]["param.optimizer.lr"] == "0.1"
