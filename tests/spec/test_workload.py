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
