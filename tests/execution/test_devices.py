"""A worker's node devices: [saturn] device_ids parsed, checked against the machine, and plan device
ids 0..k-1 mapped onto them; two workers with disjoint ids launch on disjoint cores (or GPUs)."""

import pytest

from saturn_airflow import settings
from saturn_airflow.errors import SaturnInputError
from saturn_airflow.execution import devices


def test_device_ids_setting(monkeypatch):
    monkeypatch.delenv("AIRFLOW__SATURN__DEVICE_IDS", raising=False)
    assert settings.device_ids() is None
    monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", "4-6, 1")
    assert settings.device_ids() == [4, 5, 6, 1]
    for bad in ("a,b", "1,1", "2-x", "-3"):
        monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", bad)
        with pytest.raises(SaturnInputError, match="device_ids"):
            settings.device_ids()


def test_plan_devices_map_onto_the_workers_devices_in_order(monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda kind=None: list(range(8)))
    monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", "4-7")
    assert devices.node_device_ids("cuda") == [4, 5, 6, 7]
    assert devices.physical_ids([0, 1], "gpu-b", "cuda") == [4, 5]
    assert devices.physical_ids([3], "gpu-b", "cuda") == [7]
    with pytest.raises(SaturnInputError, match="node gpu-b: this worker has 4 devices"):
        devices.physical_ids([4], "gpu-b", "cuda")
    monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", "6-9")
    with pytest.raises(SaturnInputError, match=r"lists \[8, 9\], which this machine does not have"):
        devices.node_device_ids("cuda")
    monkeypatch.delenv("AIRFLOW__SATURN__DEVICE_IDS")
    assert devices.physical_ids([0, 5], "n", "cuda") == [0, 5]  # unpinned: plan ids are the machine's


def test_a_gpu_nodes_launch_sees_exactly_its_devices(monkeypatch):
    monkeypatch.setattr(devices, "available_devices", lambda kind=None: list(range(8)))
    monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", "4-7")
    env = devices.launch_env(devices.physical_ids([1, 2], "gpu-b", "cuda"), "cuda")
    assert env["CUDA_VISIBLE_DEVICES"] == "5,6" and env[devices.ENV_IDS] == "5,6"


def test_two_workers_on_one_machine_use_disjoint_cores(monkeypatch):
    have = devices.available_devices("cpu")
    if len(have) < 2:
        pytest.skip("needs two CPU cores")
    cores = []
    for ids in ([0], [1]):
        monkeypatch.setenv("AIRFLOW__SATURN__DEVICE_IDS", ",".join(map(str, ids)))
        env = devices.launch_env(devices.physical_ids([0], "n", "cpu"), "cpu")
        cores.append(env["SATURN_CPU_CORES"])
    assert cores[0] != cores[1]
