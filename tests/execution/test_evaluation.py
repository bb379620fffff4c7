"""Held-out evaluation on real torch.distributed: the same values under every built-in parallelism and
device count as a plain model in this process, recorded once per step across a resume under another
parallelism; the exported model loads with plain torch and gives the reference's outputs."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from saturn_airflow.execution.devices import Devices
from saturn_airflow.execution.evaluation import Evaluator, evaluate_reference, heldout_batch
from saturn_airflow.execution.launch import run_job
from saturn_airflow.parallelisms import get_parallelism
from saturn_airflow.spec.workload import parse_workload
from saturn_airflow.store.files import BY_HAND, Store
from saturn_airflow.store.metrics import MetricsStore

CPU = Devices(ids=[0], kind="cpu", device=torch.device("cpu"))


def workload(kind: str, seed: int):
    """A small LM or ViT job with seeded-random steps, evaluation period and held-out batch size
    (odd sizes included, so data-parallel ranks get uneven shares)."""
    rng = random.Random(seed)
    steps = rng.randint(5, 7)
    ev = {"batches": 2, "batch_size": rng.choice([3, 5, 7, 8]), "every_steps": rng.choice([2, 3]),
          "metrics": ["loss", "accuracy"], "data_args": {"stream": 1}}
    if kind == "lm":
        job = {"name": "lm", "model": "saturn_airflow.examples.models:gpt",
               "model_args": {"size": "tiny", "vocab": 128, "seq_len": 16},
               "data": "saturn_airflow.examples.data:tokens", "data_args": {"seq_len": 16, "vocab": 128}}
    else:
        job = {"name": "lm", "model": "saturn_airflow.examples.models:vit",
               "model_args": {"size": "tiny", "image_size": 8, "patch": 4},
               "data": "saturn_airflow.examples.data:images", "data_args": {"image_size": 8}}
    job.update(batch_size=8, steps=steps, optimizer={"name": "adamw", "lr": 3e-3}, seed=seed)
    return parse_workload({"name": "eval-test", "evaluation": ev, "jobs": [job]})


def reference(wl):
    """Train in this process with no wrapper and no process group; evaluate the plain model when due."""
    job = wl.job("lm")
    tr = get_parallelism("single").build(job, CPU, {})
    ev = Evaluator(job, CPU)
    points, losses = {}, []
    for s in range(job.steps):
        losses.append(tr.step(s))
        if ev.due(s + 1, job.steps):
            points[s + 1] = evaluate_reference(tr.model, job)
    return tr.model, points, losses


def test_evaluator_in_process_equals_the_plain_reference():
    wl = workload("vit", 11)
    job = wl.job("lm")
    tr = get_parallelism("single").build(job, CPU, {})
    for s in range(2):
        tr.step(s)
    got = Evaluator(job, CPU).run(tr, 2)
    assert got == pytest.approx(evaluate_reference(tr.model, job), rel=1e-6)
    assert set(got) == {"loss", "accuracy"} and 0.0 <= got["accuracy"] <= 1.0
    assert tr.model.training  # evaluation leaves the model in training mode


def test_heldout_batches_differ_from_training_batches_and_repeat_exactly():
    wl = workload("lm", 3)
    job = wl.job("lm")
    x0, _ = heldout_batch(job, 0)
    assert torch.equal(x0, heldout_batch(job, 0)[0])
    from saturn_airflow.parallelisms.base import global_batch

    assert not torch.equal(x0[:1], global_batch(job, 0)[0][:1])


CONFIGS = [
    ("single", [0], {}, "lm"),
    ("ddp", [0, 1], {}, "lm"),
    ("fsdp", [0], {}, "vit"),
    ("fsdp", [0, 1], {"checkpoint": True}, "lm"),
    ("pipeline", [0, 1], {"schedule": "1f1b", "microbatches": 4}, "vit"),
    ("spilling", [0], {}, "lm"),
]


@pytest.mark.distributed
@pytest.mark.parametrize("par,devices,knobs,kind", CONFIGS, ids=[f"{c[0]}x{len(c[1])}-{c[3]}" for c in CONFIGS])
def test_same_values_under_every_parallelism_and_export_loads_with_plain_torch(tmp_path, par, devices, knobs, kind):
    seed = CONFIGS.index((par, devices, knobs, kind))
    wl = workload(kind, seed)
    ref_model, ref_points, ref_losses = reference(wl)
    store = str(tmp_path / "store")
    losses = tmp_path / "losses.jsonl"
    res = run_job(wl, "lm", parallelism=par, knobs=knobs, device_ids=devices, store_url=store, plan_id="p",
                  loss_log=str(losses), log=lambda line: None, timeout_s=240)
    assert res.status == "done", res.message
    # evaluation does not disturb training: the losses are the reference's
    lines = [json.loads(line) for line in losses.read_text().splitlines()]
    got_losses = [r["loss"] for r in lines if "loss" in r]  # a launch's first line says where it started
    assert got_losses == pytest.approx(ref_losses, abs=3e-5)
    rec = MetricsStore(Store(store), sweep=BY_HAND).get("eval-test", "lm")
    assert [p["step"] for p in rec["points"]] == sorted(ref_points)
    for p in rec["points"]:
        for name, v in ref_points[p["step"]].items():
            assert p["values"][name] == pytest.approx(v, rel=2e-4, abs=2e-5), (par, p["step"], name)
        assert p["parallelism"] == par and p["world_size"] == len(devices)
    assert rec["attempts"][-1]["status"] == "done" and rec["evaluation"]["metric"] == "loss"

    # the exported file, loaded with safetensors into the model its header names
    export = res.details["result"]["export"]
    meta = json.loads((tmp_path / "store" / "models" / "eval-test" / BY_HAND / "lm" / "model.json").read_text())
    assert meta["step"] == wl.job("lm").steps and meta["model"] == wl.job("lm").model
    assert meta["parallelism"] == par and meta["world_size"] == len(devices)
    x, _ = heldout_batch(wl.job("lm"), 1)
    assert torch.allclose(plain_torch_outputs(export["path"], x, tmp_path), reference_outputs(ref_model, x), atol=2e-5)


def reference_outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


PLAIN_LOAD = """
import importlib, json, sys, safetensors, safetensors.torch, torch
path, x_path, y_path = sys.argv[1:4]
with safetensors.safe_open(path, "pt") as f:
    meta = f.metadata()
mod, fn = meta["saturn.model"].split(":")
model = getattr(importlib.import_module(mod), fn)(**json.loads(meta["saturn.model_args"]))
model.load_state_dict(safetensors.torch.load_file(path))
model.eval()
with torch.no_grad():
    torch.save(model(torch.load(x_path)), y_path)
print("torch.distributed.checkpoint imported:", "torch.distributed.checkpoint" in sys.modules)
"""


def plain_torch_outputs(path: str, x, tmp_path, subprocess_check: bool = False):
    """Outputs of the exported model loaded the way the docs show (safetensors + the import path in its
    header); with `subprocess_check`, in a fresh interpreter that never touches saturn's runner code."""
    if not subprocess_check:
        import importlib

        import safetensors
        from safetensors.torch import load_file

        with safetensors.safe_open(path, "pt") as f:
            meta = f.metadata()
        mod, fn = meta["saturn.model"].split(":")
        model = getattr(importlib.import_module(mod), fn)(**json.loads(meta["saturn.model_args"]))
        model.load_state_dict(load_file(path))
        return reference_outputs(model, x)
    torch.save(x, tmp_path / "x.pt")
    out = subprocess.run([sys.executable, "-c", PLAIN_LOAD, path, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.distributed.checkpoint imported: False" in out.stdout
    return torch.load(tmp_path / "y.pt")


@pytest.mark.distributed
def test_resume_under_another_parallelism_records_each_evaluation_once_and_export_later(tmp_path):
    """fsdp x2 stops at step 3 (as if preempted), pipeline x2 finishes: the points are the reference's,
    one per due step; `saturn export` later writes the same model from the last checkpoint."""
    wl = workload("lm", 5)
    job = wl.job("lm")
    job_steps = job.steps
    ref_model, ref_points, _ = reference(wl)
    store = str(tmp_path / "store")
    kw = dict(store_url=store, plan_id="p", log=lambda line: None, timeout_s=240)
    first = run_job(wl, "lm", parallelism="fsdp", knobs={}, device_ids=[0, 1], stop_at_step=3, **kw)
    assert first.status == "preempted" and first.step == 3, first.message
    assert "export" not in first.details["result"] or first.details["result"]["export"] is None
    second = run_job(wl, "lm", parallelism="pipeline", knobs={"schedule": "gpipe", "microbatches": 2},
                     device_ids=[0, 1], **kw)
    assert second.status == "done", second.message
    rec = MetricsStore(Store(store), sweep=BY_HAND).get("eval-test", "lm")
    assert [p["step"] for p in rec["points"]] == sorted(ref_points)
    for p in rec["points"]:
        assert p["values"]["loss"] == pytest.approx(ref_points[p["step"]]["loss"], rel=2e-4)
        assert p["parallelism"] == ("fsdp" if p["step"] <= 3 else "pipeline")
    assert [(a["parallelism"], a["status"], a["start_step"]) for a in rec["attempts"]] == \
        [("fsdp", "preempted", 0), ("pipeline", "done", 3)]
    assert rec["spec"]["model"] == job.model
    x, _ = heldout_batch(job, 0)  # the pipeline-trained export in a fresh interpreter, plain torch only
    got = plain_torch_outputs(second.details["result"]["export"]["path"], x, tmp_path, subprocess_check=True)
    assert torch.allclose(got, reference_outputs(ref_model, x), atol=2e-5)

    from safetensors.torch import load_file

    from saturn_airflow.cli import main
    from saturn_airflow.execution.export import load_exported

    path = tmp_path / "store/models/eval-test/by-hand/lm/model.safetensors"
    first = load_file(path)
    path.unlink()
    assert main(["export", "eval-test", "--store", store]) == 0
    meta = json.loads((tmp_path / "store/models/eval-test/by-hand/lm/model.json").read_text())
    assert meta["step"] == job_steps and meta["bytes"] == path.stat().st_size
    again = load_file(path)
    assert sorted(again) == sorted(first) and all(torch.equal(again[k], first[k]) for k in first)
    model = load_exported(str(path))
    assert all(torch.equal(model.state_dict()[k], first[k]) for k in first)
