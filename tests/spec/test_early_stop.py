"""The workload's early_stop section: groups, metric and goal resolved; bad input is one line naming it."""

import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.workload import parse_workload

BASE = """
name: sh
cluster: {nodes: [{name: n0, gpus: 2, gpu_type: cpu}]}
jobs:
  - name: small
    model: saturn_airflow.examples.models:gpt
    model_args: {size: tiny}
    data: saturn_airflow.examples.data:tokens
    batch_size: 8
    steps: 100
  - name: big
    model: saturn_airflow.examples.models:gpt
    model_args: {size: small}
    data: saturn_airflow.examples.data:tokens
    batch_size: 8
    steps: 100
grid: {optimizer.lr: [1.0e-4, 1.0e-3, 1.0e-2]}
evaluation: {data_args: {stream: 1}, batches: 2, metrics: [loss, accuracy]}
"""


def wl(early_stop: str, base: str = BASE):
    return parse_workload(base + f"early_stop: {early_stop}\n")


def test_default_groups_are_one_model_each_and_metric_goal_come_from_the_evaluation():
    h = wl("{rungs: [20, 50]}").halving()
    assert h.groups == {"gpt(size=tiny)": ["small-lr0.0001", "small-lr0.001", "small-lr0.01"],
                        "gpt(size=small)": ["big-lr0.0001", "big-lr0.001", "big-lr0.01"]}
    assert (h.metric, h.goal, h.keep, h.rungs) == ("loss", "min", 0.5, [20, 50])
    assert h.steps["small-lr0.01"] == 100
    assert h.segment_end("big-lr0.01", 0) == 20 and h.segment_end("big-lr0.01", 20) == 50
    assert h.segment_end("big-lr0.01", 50) == 100


def test_accuracy_is_maximised_and_train_loss_minimised():
    assert wl("{rungs: [20], metric: accuracy}").halving().goal == "max"
    assert wl("{rungs: [20], metric: train_loss}").halving().goal == "min"
    assert wl("{rungs: [20], metric: loss, goal: max}").halving().goal == "max"


def test_group_all_and_explicit_groups():
    assert list(wl("{rungs: [20], group: all}").halving().groups) == ["all"]
    h = wl("{rungs: [20], group: {low: ['*-lr0.0001', 'small-lr0.001'], rest: ['big-lr0.01', 'big-lr0.001']}}").halving()
    assert h.groups == {"low": ["small-lr0.0001", "small-lr0.001", "big-lr0.0001"], "rest": ["big-lr0.001", "big-lr0.01"]}
    assert h.group_of("small-lr0.01") is None and h.rungs_of("small-lr0.01") == []
    assert h.segment_end("small-lr0.01", 0) == 100  # in no group: runs whole


def test_a_group_of_one_is_never_stopped():
    h = wl("{rungs: [20], group: {solo: [small-lr0.01]}}").halving()
    assert h.groups == {} and h.rungs_of("small-lr0.01") == []


@pytest.mark.parametrize("spec, words", [
    ("{rungs: [50, 20]}", "strictly increasing"),
    ("{rungs: [0]}", "positive"),
    ("{rungs: []}", "rungs"),
    ("{rungs: [20], keep: 1.0}", "keep"),
    ("{rungs: [100]}", "rung 100 is not below the 100 steps of job 'small-lr0.0001'"),
    ("{rungs: [20], metric: f1}", "metric 'f1' is not evaluated by job 'small-lr0.0001'"),
    ("{rungs: [20], group: {g: [nope-*]}}", "'nope-*' matches no job"),
    ("{rungs: [20], group: {a: ['small-*'], b: ['*-lr0.01']}}", "job 'small-lr0.01' is in both 'a' and 'b'"),
    ("{rungs: [20], group: some}", "group"),
    ("{rungs: [20], patience: 3}", "patience"),
])
def test_bad_early_stop_is_one_line_naming_the_problem(spec, words):
    with pytest.raises(SaturnInputError) as e:
        wl(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_early_stop_needs_an_evaluation():
    base = BASE.replace("evaluation: {data_args: {stream: 1}, batches: 2, metrics: [loss, accuracy]}\n", "")
    with pytest.raises(SaturnInputError, match="has no evaluation"):
        wl("{rungs: [20]}", base)


def test_cli_rejects_a_bad_early_stop_with_exit_2(tmp_path, capsys):
    from saturn_airflow.cli import main

    path = tmp_path / "w.yaml"
    path.write_text(BASE + "early_stop: {rungs: [20], keep: 0}\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "keep" in err and len(err.splitlines()) == 1
