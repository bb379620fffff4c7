
import pytest

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.profile_table import parse_profile_table


def table(**over):
    t = {
        "cluster": {"nodes": [{"name": "node0", "gpus": 8, "gpu_type": "a100"}]},
        "jobs": [{"name": "a", "configs": [{"parallelism": "fsdp", "gpus": 4, "runtime_s": 100.0}]}],
    }
    t.update(over)
    return t


def test_round_trip():
    t = parse_profile_table(table())
    again = parse_profile_table(t.to_json())
    assert again == t


@pytest.mark.parametrize(
    "jobs, needle",
    [
        ([{"name": "a", "configs": [{"parallelism": "fsdp", "gpus": 16, "runtime_s": 1.0}]}], "job 'a' fits no node"),
        ([{"name": "a", "configs": [{"parallelism": "fsdp", "gpus": 1, "runtime_s": -1.0}]}], "runtime_s"),
        ([{"name": "a", "configs": [{"parallelism": "fsdp", "gpus": 1, "runtime_s": 1.0, "gpu_type": "h100"}]}], "fits no node"),
        ([{"name": "a", "configs": []}], "configs"),
    ],
)
def test_bad_tables_name_the_problem(jobs, needle):
    with pytest.raises(SaturnInputError) as e:
        parse_profile_table(table(jobs=jobs))
    assert needle in str(e.value)


def test_malformed_json():
    with pytest.raises(SaturnInputError, match="malformed JSON"):
        parse_profile_table('{"cluster": ')


def test_gpu_type_restricts_nodes():
    t = parse_profile_table(table(cluster={"nodes": [{"name": "a", "gpus": 4, "gpu_type": "x"}, {"name": "b", "gpus": 4, "gpu_type": "y"}]},
                                  jobs=[{"name": "j", "configs": [{"parallelism": "ddp", "gpus": 2, "runtime_s": 5, "gpu_type": "y"}]}]))
    job = t.jobs[0]
    assert [n.name for n in t.cluster.nodes if t.feasible_configs(job, n)] == ["b"]
