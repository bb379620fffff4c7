"""Resume between every ordered pair of built-in parallelism configs, for every built-in optimizer.

Stop at step K under config A (checkpoint written), resume under config B up to the end: every loss,
before and after the stop, equals the uninterrupted single-device run's (up to reduction order).
Configs span every built-in parallelism, both device counts of this machine, and two pipeline
layouts (another stage balance, schedule and microbatch count). The model is an encoder generated
from a seed (resume_matrix.py), not one of the examples.

Cost: the phases run in three torchrun launches (2 ranks, 1 rank, 2 ranks) instead of one launch
per phase; `saturn train` covers the same path through the CLI for two of the pairs.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SEED = int(os.environ.get("SATURN_TEST_SEED", "14"))
OPTIMIZERS = {
    "adamw": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05, "betas": [0.9, 0.95]},
    "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
}
ABS_TOL, REL_TOL = 5e-5, 1e-4  # gloo all-reduce and microbatch sums add in another order than one device


def other_balance(seed: int) -> list[int]:
    """A two-stage split that is not the pipeline's own cost-balanced one."""
    import torch

    if str(HERE) not in sys.path:  # the ranks get it through PYTHONPATH
        sys.path.insert(0, str(HERE))
    import resume_matrix
    from saturn_airflow.parallelisms.pipeline import balance, child_costs

    with torch.device("meta"):
        model = resume_matrix.encoder(seed)
    own = balance(child_costs(model), 2)
    return next([0, k] for k in range(1, len(model)) if [0, k] != own)


def configs(seed: int) -> dict[str, tuple[str, int, dict]]:
    return {
        "single": ("single", 1, {}),
        "ddp": ("ddp", 2, {}),
        "fsdp-2": ("fsdp", 2, {"checkpoint": True}),
        "fsdp-1": ("fsdp", 1, {}),
        "pipeline": ("pipeline", 2, {"schedule": "1f1b", "microbatches": 4}),
        "pipeline-rebalanced": ("pipeline", 2, {"schedule": "gpipe", "microbatches": 2, "balance": other_balance(seed)}),
        "spilling": ("spilling", 1, {}),
    }


def workload(seed: int, steps: int) -> dict:
    return {"name": "resume-matrix", "jobs": [
        {"name": opt, "model": "resume_matrix:encoder", "model_args": {"seed": seed},
         "data": "resume_matrix:features", "data_args": {"seed": seed}, "batch_size": 8, "steps": steps,
         "optimizer": spec, "seed": seed} for opt, spec in OPTIMIZERS.items()]}


def launch(device_ids: list[int], spec: dict, tmp: Path, name: str) -> subprocess.Popen:
    """Start one torchrun launch of the driver over `spec`'s phases on these CPU cores."""
    from saturn_airflow.execution.devices import launch_env

    phases = tmp / f"{name}.json"
    phases.write_text(json.dumps(spec))
    env = {**os.environ, **launch_env(device_ids, "cpu"), "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={len(device_ids)}",
           "--max-restarts=0", str(HERE / "resume_matrix.py"), str(phases), str(tmp / f"{name}.jsonl")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results(proc: subprocess.Popen, tmp: Path, name: str) -> list[dict]:
    output, _ = proc.communicate(timeout=2000)
    out = tmp / f"{name}.jsonl"
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    errors = [r for r in recs if "error" in r]
    assert proc.returncode == 0 and not errors, (name, errors[:1] or output[-4000:])
    return recs


def close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= ABS_TOL + REL_TOL * abs(w) for g, w in zip(got, want))


@pytest.mark.distributed
@pytest.mark.timeout(2400)  # ~2.5 min on a quiet 2-core box; 4-5x that when the box is shared
def test_every_pair_resumes_to_the_uninterrupted_losses(tmp_path):
    rng = random.Random(SEED)
    stop = rng.randint(2, 4)
    steps = stop + rng.randint(2, 3)
    wl = workload(SEED, steps)
    cfg = configs(SEED)
    cases = [(opt, a, b) for opt in OPTIMIZERS for a in cfg for b in cfg]

    def phase(case, which, conf, **kw):
        par, _, knobs = cfg[conf]
        return {"case": case, "phase": which, "job": case[0], "parallelism": par, "knobs": knobs, **kw}

    # A (stop at `stop`) runs once per (optimizer, config); each B resumes from its own copy of A's checkpoint.
    # Launches: 2 ranks (A of 2-device configs, B of 2 -> 2); then one launch per optimizer on its own core
    # (A of 1-device configs, B of any -> 1, the uninterrupted reference); last 2 ranks (B of 1 -> 2).
    launches: dict[str, tuple[list[int], list[dict]]] = {"first-2": ([0, 1], []), "last-2": ([0, 1], [])}
    for i, opt in enumerate(OPTIMIZERS):
        launches[f"one-{opt}"] = ([i % 2], [phase([opt, "-", "-"], "reference", "single", steps=steps)])
    for opt in OPTIMIZERS:
        for a in cfg:
            ck_a = str(tmp_path / "ck" / f"{opt}_{a}")
            launches["first-2" if cfg[a][1] == 2 else f"one-{opt}"][1].append(
                phase([opt, a, "*"], "A", a, steps=steps, stop_at=stop, checkpoint=ck_a))
        for a in cfg:
            for b in cfg:
                wa, wb = cfg[a][1], cfg[b][1]
                where = "first-2" if wa == wb == 2 else f"one-{opt}" if wb == 1 else "last-2"
                launches[where][1].append(phase([opt, a, b], "B", b, steps=steps, copy_from=str(tmp_path / "ck" / f"{opt}_{a}"),
                                                checkpoint=str(tmp_path / "ck" / f"{opt}_{a}_{b}")))

    t0 = time.perf_counter()
    recs, walls = [], {}
    for group in (["first-2"], [f"one-{opt}" for opt in OPTIMIZERS], ["last-2"]):  # a group's launches run at once
        t = time.perf_counter()
        procs = {name: launch(launches[name][0], {"workload": wl, "phases": launches[name][1]}, tmp_path, name)
                 for name in group}
        for name, proc in procs.items():
            recs += results(proc, tmp_path, name)
        walls["+".join(group)] = round(time.perf_counter() - t, 1)
    print(f"resume matrix: {len(cases)} cases (seed {SEED}, stop {stop}/{steps}) in {time.perf_counter() - t0:.0f} s {walls}")

    got = {(tuple(r["case"]), r["phase"]): r for r in recs}
    ref = {opt: got[((opt, "-", "-"), "reference")]["losses"] for opt in OPTIMIZERS}
    bad = []
    for case in cases:
        a, b = got.get(((case[0], case[1], "*"), "A")), got.get((case, "B"))
        if a is None or b is None:
            bad.append(f"{case}: phase missing")
            continue
        want = ref[case[0]]
        if (a["status"], a["step"], b["start_step"], b["status"]) != ("preempted", stop, stop, "done"):
            bad.append(f"{case}: A {a['status']} at {a['step']}, B from {b['start_step']} {b['status']}")
        elif not close(a["losses"] + b["losses"], want):
            bad.append(f"{case}: losses {a['losses'] + b['losses']} != {want}")
    assert not bad, f"{len(bad)} of {len(cases)} cases differ (seed {SEED}):\n" + "\n".join(bad[:10])


# ---- the same resumes through `saturn train` (the CLI contract) ---------------------------------

def saturn_train(wl_path: Path, store: Path, *args: str, on_line=None, sweep: str | None = None):
    """`saturn train` as a user runs it; returns (exit status, stdout lines, stderr)."""
    cmd = [sys.executable, "-m", "saturn_airflow.cli", "train", str(wl_path), "--store", str(store), *args]
    if sweep:
        cmd += ["--sweep", sweep]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if on_line:
            on_line(proc, lines[-1])
    err = proc.stderr.read()
    return proc.wait(timeout=300), lines, err


@pytest.mark.distributed
@pytest.mark.timeout(1800)
def test_saturn_train_stops_resumes_and_is_preempted_by_a_signal(tmp_path):
    """pipeline (stop at K1) -> pipeline (stop at K2) -> single, SIGTERM'd (75) -> single to the end ->
    nothing left: each run resumes where the last stopped, and the losses are the uninterrupted run's."""
    import signal

    import torch
    import yaml

    from saturn_airflow.execution.devices import Devices
    from saturn_airflow.parallelisms import get_parallelism
    from saturn_airflow.spec.workload import parse_workload
    from saturn_airflow.store.files import BY_HAND, ProgressStore, Store

    rng = random.Random(SEED + 1)
    steps = rng.randint(24, 32)
    k1, k2 = rng.randint(2, 5), rng.randint(7, 10)
    spec = workload(SEED + 1, steps)
    spec["jobs"] = [j for j in spec["jobs"] if j["name"] == "sgd"]
    spec["jobs"][0]["data_args"].update(slow_from_step=k2, slow_step_s=0.4)  # the same batches, slower: time to act
    wl_path = tmp_path / "wl.yaml"
    wl_path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "store"
    sys.path.insert(0, str(HERE)) if str(HERE) not in sys.path else None
    cpu = Devices(ids=[0], kind="cpu", device=torch.device("cpu"))
    trainer = get_parallelism("single").build(parse_workload(spec).job("sgd"), cpu, {})
    ref = [trainer.step(s) for s in range(steps)]

    def record():
        return ProgressStore(Store(str(store)), sweep=BY_HAND).get("resume-matrix", "sgd")

    pipe = ["--job", "sgd", "--parallelism", "pipeline", "--devices", "0,1", "--knobs", '{"microbatches": 4}']
    code, out, err = saturn_train(wl_path, store, *pipe, "--stop-at-step", str(k1))
    assert code == 0 and out[0].startswith("starting at step 0"), (code, out[-5:], err[-2000:])
    assert record()["step"] == k1 and close([record()["loss"]], [ref[k1 - 1]])

    code, out, err = saturn_train(wl_path, store, *pipe, "--stop-at-step", str(k2))  # pipeline -> pipeline
    assert code == 0 and out[0].startswith(f"resuming at step {k1} "), (code, out[-5:], err[-2000:])
    assert record()["step"] == k2 and close([record()["loss"]], [ref[k2 - 1]])

    step_line = re.compile(r"\[saturn\] sgd: step (\d+)/")

    def term_mid_run(proc, line):
        m = step_line.match(line)
        if m and int(m.group(1)) > k2 and proc.returncode is None and not getattr(proc, "termed", False):
            proc.termed = True
            proc.send_signal(signal.SIGTERM)

    single = ["--job", "sgd", "--parallelism", "single", "--devices", "1"]
    code, out, err = saturn_train(wl_path, store, *single, on_line=term_mid_run)  # pipeline 2 -> single 1
    assert code == 75, (code, out[-5:], err[-2000:])
    assert out[0].startswith(f"resuming at step {k2} ") and "preempted at step" in out[-1]
    k3 = record()["step"]
    assert k2 < k3 < steps and record()["state"] == "preempted"

    code, out, err = saturn_train(wl_path, store, *single)
    assert code == 0 and out[0].startswith(f"resuming at step {k3} ") and out[-1] == f"job sgd: done at step {steps}/{steps}"
    assert record()["state"] == "done" and close([record()["loss"]], [ref[-1]]), (record(), ref[-1])

    code, out, err = saturn_train(wl_path, store, *single)  # nothing left: no launch at all
    assert code == 0 and "nothing to train" in out[-1]


@pytest.mark.distributed
def test_saturn_train_exits_1_when_the_job_fails_and_2_on_bad_input(tmp_path):
    import yaml

    spec = workload(SEED, 4)
    spec["jobs"].append({**spec["jobs"][0], "name": "broken", "model": "resume_matrix:broken"})
    wl_path = tmp_path / "wl.yaml"
    wl_path.write_text(yaml.safe_dump(spec))
    code, out, err = saturn_train(wl_path, tmp_path / "store", "--job", "broken", "--parallelism", "ddp", "--devices", "0,1")
    assert code == 1 and "this model cannot be built" in err.strip().splitlines()[-1], (code, out, err[-2000:])
    assert "Traceback" not in "\n".join(out)
    code, out, err = saturn_train(wl_path, tmp_path / "store", "--job", "adamw", "--parallelism", "pipeline",
                                  "--devices", "0")
    assert code == 2 and err.strip().splitlines() == [
        "saturn: error: job 'adamw' cannot run under pipeline on 1 device(s): pipeline needs at least 2 devices, not 1"]
