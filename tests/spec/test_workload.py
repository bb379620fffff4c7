import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.workload import expand_grid, parse_workload, registered_parallelism_names

BASE = """
name: lm
cluster: {nodes: [{name: n0, gpus: 2, gpu_type: cpu}]}
jobs:
  - name: gpt
    model: saturn_airflow.examples.models:gpt
    data: saturn_airflow.examples.data:tokens
    batch_size: 8
    steps: 10
"""


def test_minimal_workload_loads_with_defaults():
    w = parse_workload(BASE)
    assert [j.name for j in w.jobs] == ["gpt"]
    assert w.jobs[0].optimizer.name == "adamw"
    assert set(w.parallelisms) == set(registered_parallelism_names())
    assert w.cluster.total_gpus == 2


def test_grid_expands_jobs_times_grid_with_readable_names():
    w = parse_workload(BASE + "grid: {optimizer.lr: [1.0e-5, 1.0e-4, 3.0e-3], batch_size: [16, 32]}\n")
    assert len(w.jobs) == 6
    j = w.job("gpt-lr0.003-b32")
    assert j.optimizer.lr == pytest.approx(3e-3) and j.batch_size == 32
    assert len({j.name for j in w.jobs}) == 6


def test_grid_on_model_args_sets_nested_value():
    w = parse_workload(BASE + "grid: {model_args.d_model: [64, 128]}\n")
    assert sorted(j.model_args["d_model"] for j in w.jobs) == [64, 128]


def test_expand_grid_keeps_original_job_untouched():
    w = parse_workload(BASE)
    out = expand_grid(w.jobs, {"seed": [1, 2]})
    assert [j.seed for j in out] == [1, 2] and w.jobs[0].seed == 0


@pytest.mark.parametrize(
    "patch, needle",
    [
        ("parallelisms: [ddp, warp]\n", "unknown parallelism 'warp'"),
        ("grid: {optimizer.lr: []}\n", "grid.optimizer.lr"),
        ("grid: {colour: [1]}\n", "'colour' is not a job field"),
        ("grid: {batch_size: [0]}\n", "batch_size"),
    ],
)
def test_bad_workloads_name_the_problem(patch, needle):
    with pytest.raises(SaturnInputError) as e:
        parse_workload(BASE + patch)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_duplicate_job_names_rejected():
    text = BASE + """  - name: gpt
    model: a.b:c
    data: a.b:d
    batch_size: 8
    steps: 10
"""
    with pytest.raises(SaturnInputError, match="duplicate job name 'gpt'"):
        parse_workload(text)


def test_malformed_yaml_gives_position():
    with pytest.raises(SaturnInputError, match="malformed YAML at line"):
        parse_workload("name: [unclosed\njobs: 3")


EVAL = BASE + """evaluation: {batches: 2, every_steps: 5, metrics: [loss, accuracy], data_args: {stream: 1}}
"""


def test_evaluation_top_level_applies_to_every_job_and_a_job_overrides_keys():
    w = parse_workload(EVAL + "grid: {optimizer.lr: [0.1, 0.2]}\n")
    for j in w.jobs:
        ev = j.evaluation
        assert (ev.batches, ev.every_steps, ev.metric, ev.goal, ev.names) == (2, 5, "loss", "min", ["loss", "accuracy"])
    own = EVAL.replace("    steps: 10\n", "    steps: 10\n    evaluation: {metric: accuracy, batches: 3}\n")
    ev = parse_workload(own).jobs[0].evaluation
    assert (ev.batches, ev.every_steps, ev.metric, ev.goal) == (3, 5, "accuracy", "max")
    off = EVAL.replace("    steps: 10\n", "    steps: 10\n    evaluation: null\n")
    assert parse_workload(off).jobs[0].evaluation is None
    assert parse_workload(BASE).jobs[0].evaluation is None  # optional: no evaluation unless asked


def test_evaluation_factory_metric_needs_a_goal_and_names_it_by_function():
    ev = parse_workload(BASE + "evaluation: {metrics: [my.metrics:f1, loss], goal: max}\n").jobs[0].evaluation
    assert ev.names == ["f1", "loss"] and ev.metric == "f1" and ev.goal == "max"


@pytest.mark.parametrize("job_eval, needle", [
    ("{goal: up}", "job 'gpt': evaluation: goal: Input should be 'min' or 'max'"),
    ("{metrics: [my.metrics:f1]}", "job 'gpt': evaluation: goal: say min or max for metric 'f1'"),
    ("{metrics: [loss], metric: accuracy}", "job 'gpt': evaluation: metric 'accuracy' is not one of metrics (loss)"),
    ("{metrics: [precision]}", "job 'gpt': evaluation: metrics: metric 'precision' is neither a built-in"),
    ("{metrics: [a.b:loss, loss]}", "two metrics are named 'loss'"),
    ("{batches: 0}", "job 'gpt': evaluation: batches: Input should be greater than 0"),
    ("{every_steps: -5}", "job 'gpt': evaluation: every_steps"),
    ("{data: not-a-path}", "job 'gpt': evaluation: data: 'not-a-path' is not an import path"),
    ("{colour: red}", "job 'gpt': evaluation: colour: Extra inputs are not permitted"),
    ("[loss]", "job 'gpt': evaluation: expected a mapping, got list"),
])
def test_bad_evaluation_is_one_line_naming_job_and_field(job_eval, needle):
    text = BASE.replace("    steps: 10\n", f"    steps: 10\n    evaluation: {job_eval}\n")
    with pytest.raises(SaturnInputError) as e:
        parse_workload(text, source="w.yaml")
    assert str(e.value).startswith("w.yaml: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_bad_top_level_evaluation_names_the_first_job_it_reaches():
    with pytest.raises(SaturnInputError, match=r"job 'gpt': evaluation: goal"):
        parse_workload(BASE + "evaluation: {goal: sideways}\n")
    with pytest.raises(SaturnInputError, match="evaluation: expected a mapping"):
        parse_workload(BASE + "evaluation: 3\n")


def test_evaluation_cost_in_training_steps_counts_the_last_step_once():
    from saturn_airflow.spec.workload import FORWARD_SHARE, evaluation_steps

    def cost(every, steps, batches=3, bs=None):
        ev = {"batches": batches, **({"every_steps": every} if every else {}), **({"batch_size": bs} if bs else {})}
        return evaluation_steps(parse_workload(BASE.replace("steps: 10", f"steps: {steps}")
                                               + f"evaluation: {ev}\n").jobs[0])

    assert evaluation_steps(parse_workload(BASE).jobs[0]) == 0.0
    assert cost(None, 10) == pytest.approx(3 * FORWARD_SHARE)          # only at the end
    assert cost(5, 10) == pytest.approx(2 * 3 * FORWARD_SHARE)         # 5, 10
    assert cost(4, 10) == pytest.approx(3 * 3 * FORWARD_SHARE)         # 4, 8 and the end
    assert cost(5, 10, bs=16) == pytest.approx(2 * 3 * 2 * FORWARD_SHARE)  # twice the job's 8 rows
