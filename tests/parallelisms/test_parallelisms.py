"""Every built-in parallelism trains the same losses as a single-process reference on the same global batches."""

from __future__ import annotations

import json

import pytest
import torch

from saturn_airflow.execution.devices import Devices
from saturn_airflow.execution.launch import run_job
from saturn_airflow.parallelisms import get_parallelism, registry
from saturn_airflow.parallelisms.base import Parallelism, apply_activation_checkpointing, blocks, build_model
from saturn_airflow.parallelisms.pipeline import balance, child_costs
from saturn_airflow.spec.workload import parse_workload

STEPS = 5
WORKLOAD = {
    "name": "par-test",
    "jobs": [{
        "name": "lm", "model": "saturn_airflow.examples.models:gpt",
        "model_args": {"size": "tiny", "vocab": 256, "seq_len": 32},
        "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 32, "vocab": 256},
        "batch_size": 8, "steps": STEPS, "optimizer": {"name": "adamw", "lr": 1e-3},
    }],
}


def reference_losses(workload, job="lm", steps=STEPS) -> list[float]:
    """The plain model in this process: no wrapper, no process group."""
    cpu = Devices(ids=[0], kind="cpu", device=torch.device("cpu"))
    trainer = get_parallelism("single").build(workload.job(job), cpu, {})
    return [trainer.step(s) for s in range(steps)]


@pytest.fixture(scope="module")
def workload():
    return parse_workload(WORKLOAD)


@pytest.fixture(scope="module")
def reference(workload):
    return reference_losses(workload)


def read_losses(path) -> list[float]:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if "loss" in r]  # a launch's first line says where it started


def test_registry_has_builtins_and_loads_classes():
    names = set(registry())
    assert {"single", "ddp", "fsdp", "pipeline", "spilling"} <= names
    for n in ("single", "ddp", "fsdp", "pipeline", "spilling"):
        p = get_parallelism(n)
        assert isinstance(p, Parallelism) and p.name == n
    with pytest.raises(KeyError, match="registered"):
        get_parallelism("nope")


def test_static_checks(workload):
    job = workload.job("lm")
    assert get_parallelism("single").check(job, 2)
    assert get_parallelism("ddp").check(job, 1)
    assert get_parallelism("ddp").check(job, 3) and "divisible" in get_parallelism("ddp").check(job, 3)
    assert get_parallelism("pipeline").check(job, 2) is None
    vit = job.model_copy(update={"model": "saturn_airflow.examples.models:vit", "model_args": {"size": "tiny"}})
    assert get_parallelism("pipeline").check(vit, 2) is None
    not_seq = job.model_copy(update={"model": "torch.nn:Identity", "model_args": {}})
    assert "Sequential" in get_parallelism("pipeline").check(not_seq, 2)


def test_balance_is_contiguous_and_even():
    assert balance([1, 1, 1, 1], 2) == [0, 2]
    assert balance([10, 1, 1, 1, 1, 10], 2) == [0, 3]
    assert balance([5, 5, 5], 3) == [0, 1, 2]


def test_activation_checkpointing_keeps_names_and_gradients(workload):
    job = workload.job("lm")
    a, b = build_model(job), build_model(job)
    apply_activation_checkpointing(blocks(b))
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    x = torch.randint(0, 256, (2, 32))
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa.grad, pb.grad), n


def test_pipeline_stage_costs_ignore_embeddings(workload):
    costs = child_costs(build_model(workload.job("lm")))
    assert costs[0] < costs[1]  # the embedding table is a lookup, not a matmul


@pytest.mark.distributed
@pytest.mark.parametrize("name,devices,knobs", [
    # ddp, fsdp and single (and gpipe) are checked against the reference in tests/test_runner.py's resume tests
    ("pipeline", [0, 1], {"schedule": "1f1b", "microbatches": 4}),
    ("spilling", [0], {}),
])
def test_matches_single_process_reference(tmp_path, workload, reference, name, devices, knobs):
    losses = tmp_path / "losses.jsonl"
    res = run_job(workload, "lm", parallelism=name, knobs=knobs, device_ids=devices, store_url=str(tmp_path / "store"),
                  plan_id="t", loss_log=str(losses), log=lambda line: None, timeout_s=180)
    assert res.status == "done", res.message
    got = read_losses(losses)
    assert got == pytest.approx(reference, abs=2e-5), (name, got, reference)


@pytest.mark.distributed
def test_user_parallelism_registers_and_trains(tmp_path, reference, monkeypatch):
    """The docs' worked example: a class plus one registration line (here at runtime, not pyproject)."""
    from saturn_airflow.parallelisms import ENV_EXTRA, register

    monkeypatch.setenv(ENV_EXTRA, "")
    register("ddp-accum", "saturn_airflow.examples.custom_parallelism:AccumDDP")
    assert "ddp-accum" in registry()
    wl = parse_workload({**WORKLOAD, "parallelisms": ["single", "ddp-accum"]})  # the workload accepts the name
    losses = tmp_path / "losses.jsonl"
    res = run_job(wl, "lm", parallelism="ddp-accum", knobs={"accum": 2}, device_ids=[0, 1],
                  store_url=str(tmp_path / "store"), plan_id="t", loss_log=str(losses), log=lambda line: None,
                  timeout_s=180)
    assert res.status == "done", res.message
    assert read_losses(losses) == pytest.approx(reference, abs=2e-5)


def test_builtin_list_matches_the_entry_points_pyproject_declares():
    import tomllib
    from pathlib import Path

    from saturn_airflow.parallelisms import BUILTIN, PARALLELISM_GROUP

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"][PARALLELISM_GROUP] == BUILTIN
