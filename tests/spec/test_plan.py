from saturn_airflow.spec.plan import Assignment, Plan, SolverInfo, check_plan, fill_after, plan_violations
from saturn_airflow.spec.profile_table import parse_profile_table

TABLE = parse_profile_table({
    "cluster": {"nodes": [{"name": "n", "gpus": 2}]},
    "jobs": [
        {"name": "a", "configs": [{"parallelism": "ddp", "gpus": 2, "runtime_s": 10.0}, {"parallelism": "single", "gpus": 1, "runtime_s": 18.0}]},
        {"name": "b", "configs": [{"parallelism": "single", "gpus": 1, "runtime_s": 5.0}]},
    ],
})


def make(assignments):
    fill_after(assignments)
    return Plan(plan_id="p", workload="w", created_at="now", makespan_s=max(a.end_s for a in assignments),
                lower_bound_s=0.0, solver=SolverInfo(name="test", status="heuristic"), assignments=assignments)


def test_valid_plan_and_after_edges():
    p = make([Assignment(job="a", parallelism="ddp", gpus=2, node="n", gpu_ids=[0, 1], start_s=0, end_s=10),
              Assignment(job="b", parallelism="single", gpus=1, node="n", gpu_ids=[1], start_s=10, end_s=15)])
    assert check_plan(p, TABLE) is p
    assert p.assignment("b").after == ["a"]


def test_overlap_wrong_runtime_and_bad_ids_are_reported():
    p = make([Assignment(job="a", parallelism="single", gpus=1, node="n", gpu_ids=[0], start_s=0, end_s=17),
              Assignment(job="b", parallelism="single", gpus=1, node="n", gpu_ids=[0], start_s=5, end_s=10)])
    bad = " | ".join(plan_violations(p, TABLE))
    assert "differs from the config runtime" in bad and "share GPU [0]" in bad


def test_missing_job_and_unknown_node():
    p = make([Assignment(job="a", parallelism="ddp", gpus=2, node="zz", gpu_ids=[0, 1], start_s=0, end_s=10)])
    bad = " | ".join(plan_violations(p, TABLE))
    assert "job 'b' appears 0 times" in bad and "unknown node 'zz'" in bad


def test_wrong_after_is_reported():
    p = make([Assignment(job="a", parallelism="ddp", gpus=2, node="n", gpu_ids=[0, 1], start_s=0, end_s=10),
              Assignment(job="b", parallelism="single", gpus=1, node="n", gpu_ids=[1], start_s=10, end_s=15)])
    p.assignments[1].after = []
    assert any("after [] should be ['a']" in v for v in plan_violations(p, TABLE))
