"""The resume matrix's model, data and driver: many stop/resume phases in one torchrun launch.

Model and data are generated from a seed (sizes, block kinds, norm placement), so the matrix runs
on an encoder none of the examples ship. The driver runs a list of phases in one process group, one
after another: each phase (optionally on a copy of another phase's checkpoint) trains one job under one parallelism from its checkpoint (if any) up to a
stop step or the end, through `Parallelism.execute` and a real `CheckpointManager`, exactly as the
runner does; rank 0 appends {case, phase, start_step, losses} to the output file.

    python -m torch.distributed.run --standalone --nproc-per-node=2 resume_matrix.py PHASES.json OUT.jsonl
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import traceback

import torch
from torch import nn


# ---- the generated encoder ---------------------------------------------------------------------

def sizes(seed: int) -> dict:
    """Everything the seed decides about the model and its data."""
    rng = random.Random(seed)
    d = rng.choice([16, 24, 32])
    return {
        "d_in": rng.choice([6, 8, 12]), "d_model": d, "seq_len": rng.choice([4, 6, 8]),
        "classes": rng.choice([3, 5, 7]),
        "blocks": [rng.choice(["attn", "mlp"]) for _ in range(rng.randint(3, 5))],
        "heads": rng.choice([h for h in (1, 2, 4) if d % h == 0]),
        "ff": rng.choice([2, 3]) * d, "norm_first": rng.random() < 0.5,
    }


class ResidualMLP(nn.Module):
    def __init__(self, d: int, ff: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, ff)
        self.down = nn.Linear(ff, d)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class PoolHead(nn.Module):
    def __init__(self, d: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, classes)

    def forward(self, x):
        return self.out(self.norm(x).mean(dim=1))


def encoder(seed: int = 0) -> nn.Sequential:
    """An nn.Sequential encoder (pipelinable) whose shape comes from `seed`."""
    s = sizes(seed)
    layers: list[nn.Module] = [nn.Linear(s["d_in"], s["d_model"])]
    for kind in s["blocks"]:
        if kind == "attn":
            layers.append(nn.TransformerEncoderLayer(s["d_model"], s["heads"], dim_feedforward=s["ff"], dropout=0.0,
                                                     batch_first=True, norm_first=s["norm_first"]))
        else:
            layers.append(ResidualMLP(s["d_model"], s["ff"]))
    layers.append(PoolHead(s["d_model"], s["classes"]))
    return nn.Sequential(*layers)


def features(step: int, batch_size: int, *, seed: int = 0, slow_from_step: int = 0, slow_step_s: float = 0.0):
    """Sequences of features and a class from a fixed random teacher: a pure function of (seed, step).
    `slow_step_s` sleeps per step from `slow_from_step` on (time for a test to act mid-run); the
    batches do not change."""
    if slow_step_s and step >= slow_from_step:
        time.sleep(slow_step_s)
    s = sizes(seed)
    g = torch.Generator().manual_seed(seed * 7919 + step)
    x = torch.randn(batch_size, s["seq_len"], s["d_in"], generator=g)
    teacher = torch.randn(s["d_in"], s["classes"], generator=torch.Generator().manual_seed(seed))
    y = (x.mean(dim=1) @ teacher).argmax(dim=-1)
    return x, y


def broken(**kwargs) -> nn.Module:
    """A model factory that imports but fails in every rank: the job fails (exit 1), it is not bad input."""
    raise RuntimeError("this model cannot be built (on purpose)")


# ---- the driver --------------------------------------------------------------------------------

def _emit(out: str, rec: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def main(argv: list[str]) -> int:
    import torch.distributed as dist

    from saturn_airflow.execution.checkpoint import CheckpointManager
    from saturn_airflow.execution.devices import bind_rank
    from saturn_airflow.parallelisms import get_parallelism
    from saturn_airflow.parallelisms.base import StopSignal
    from saturn_airflow.spec.workload import parse_workload

    phases_path, out = argv
    spec = json.loads(open(phases_path).read())
    workload = parse_workload(spec["workload"])
    devices = bind_rank()
    dist.init_process_group(devices.backend)
    for ph in spec["phases"]:
        t0 = time.perf_counter()
        try:
            job = workload.job(ph["job"])
            if ph.get("copy_from"):  # resume from a copy of another phase's checkpoint (it stays untouched)
                if devices.is_main:
                    shutil.copytree(ph["copy_from"], ph["checkpoint"])
                dist.barrier()
            ckpt = None
            if ph.get("checkpoint"):
                ckpt = CheckpointManager(ph["checkpoint"], devices=devices, every_s=None,
                                         meta={"parallelism": ph["parallelism"], "world_size": devices.world_size})
            res = get_parallelism(ph["parallelism"]).execute(job, devices, ph.get("knobs") or {}, ph["steps"], ckpt,
                                                             stop=StopSignal(stop_at_step=ph.get("stop_at")))
        except BaseException as e:  # noqa: BLE001 - name the failing case; torchrun then stops the peers
            _emit(out, {"case": ph["case"], "phase": ph["phase"], "rank": devices.rank,
                        "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
            raise
        if devices.is_main:
            _emit(out, {"case": ph["case"], "phase": ph["phase"], "status": res.status, "start_step": res.start_step,
                        "step": res.step, "losses": res.losses, "wall_s": time.perf_counter() - t0})
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))
