"""`pipeline`: torch.distributed.pipelining; each rank holds a contiguous run of an nn.Sequential's
children (a stage), microbatches flow through the stages under a GPipe or 1F1B schedule.

Stages keep the full model's parameter names (the children are registered under their original
indices), so a pipeline checkpoint loads under any other parallelism and back. Stages are balanced
by compute-weighted parameter count (embedding tables cost nothing to look up).
Knobs: `schedule` ("1f1b" | "gpipe"), `microbatches` (divides the batch), `balance` (stage starts).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from saturn_airflow.execution.devices import Devices
from saturn_airflow.parallelisms.base import Parallelism, Trainer, build_model, global_batch, loss_of, make_optimizer, resolve, to_device


def child_costs(model: nn.Sequential) -> list[float]:
    """Relative compute of each child: parameters outside embeddings (matmul work per token ~ params)."""
    costs = []
    for child in model.children():
        n = sum(p.numel() for m in child.modules() if not isinstance(m, nn.Embedding)
                for p in m.parameters(recurse=False))
        costs.append(float(n) + 1.0)
    return costs


def balance(costs: list[float], stages: int) -> list[int]:
    """Start index of each stage: contiguous split minimising the most expensive stage (exact DP)."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                v = max(best[k - 1][i], prefix[j] - prefix[i])
                if v < best[k][j]:
                    best[k][j], cut[k][j] = v, i
    starts, j = [], n
    for k in range(stages, 0, -1):
        j = cut[k][j]
        starts.append(j)
    return sorted(starts)


class PipelineTrainer(Trainer):
    def __init__(self, job, devices: Devices, stage_mod: nn.Module, schedule, n_stages: int):
        self.job, self.devices, self.model = job, devices, stage_mod
        self.schedule, self.n_stages = schedule, n_stages
        self.optimizer = make_optimizer(stage_mod.parameters(), job.optimizer)

    def step(self, step: int) -> Optional[float]:
        d = self.devices
        x, y = global_batch(self.job, step)
        first, last = d.rank == 0, d.rank == self.n_stages - 1
        losses: list = []
        if first:
            self.schedule.step(to_device(x, d.device))
        elif last:
            self.schedule.step(target=to_device(y, d.device), losses=losses)
        else:
            self.schedule.step()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.stack(losses).mean().detach() if last else torch.zeros((), device=d.device)
        dist.broadcast(loss, src=self.n_stages - 1)  # the loss lives on the last stage; report it everywhere
        return float(loss)


    def eval_forward(self, inputs):
        """The whole held-out batch through the stages in order, activations sent point to point (no
        schedule: its microbatch shapes were fixed for training); the last stage holds the outputs."""
        d = self.devices
        first, last = d.rank == 0, d.rank == self.n_stages - 1
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                h = to_device(inputs, d.device) if first else _recv_tensor(d.rank - 1, d.device)
                h = self.model(h)
                if not last:
                    _send_tensor(h, d.rank + 1)
        finally:
            self.model.train(was)
        n = inputs[0].shape[0] if isinstance(inputs, (tuple, list)) else inputs.shape[0]
        return (h, (0, n)) if last else None


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.bool]
_MAX_DIMS = 8


def _send_tensor(t: torch.Tensor, dst: int) -> None:
    """A tensor of any shape and dtype to rank `dst`: a fixed-size header (ndim, dtype, shape), then the data."""
    if t.dim() > _MAX_DIMS:
        raise ValueError(f"pipeline evaluation sends activations of at most {_MAX_DIMS} dimensions, not {t.dim()}")
    head = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64)
    head[0], head[1] = t.dim(), _DTYPES.index(t.dtype)
    head[2:2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
    dist.send(head.to(t.device), dst)
    dist.send(t.contiguous(), dst)


def _recv_tensor(src: int, device) -> torch.Tensor:
    head = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64, device=device)
    dist.recv(head, src)
    head = head.cpu()
    ndim, dtype = int(head[0]), _DTYPES[int(head[1])]
    t = torch.empty([int(x) for x in head[2:2 + ndim]], dtype=dtype, device=device)
    dist.recv(t, src)
    return t


class Pipeline(Parallelism):
    name = "pipeline"
    min_devices = 2

    def check(self, job, n_devices: int) -> Optional[str]:
        if n_devices < self.min_devices:
            return f"pipeline needs at least 2 devices, not {n_devices}"
        import torch.nn as tnn  # the factory is plain Python: call it cheaply on the meta device

        with torch.device("meta"):
            model = resolve(job.model, job=job.name, role="model factory")(**job.model_args)
        if not isinstance(model, tnn.Sequential):
            return f"pipeline needs a torch.nn.Sequential model; {job.model} returns {type(model).__name__}"
        if len(model) < n_devices:
            return f"pipeline: {len(model)} children cannot fill {n_devices} stages"
        if job.batch_size % n_devices:
            return f"batch_size {job.batch_size} is not divisible into {n_devices} microbatches"
        return None

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        w, b = devices.world_size, job.batch_size
        micro = [m for m in (2 * w, w, 4 * w) if b % m == 0] or [w]
        # more microbatches shrink the bubble but cost per-message overhead; 1F1B holds fewer activations
        return [{"schedule": s, "microbatches": m} for m in micro[:2] for s in ("1f1b", "gpipe")] + \
               [{"schedule": "1f1b", "microbatches": m} for m in micro[2:]]

    def build(self, job, devices: Devices, knobs: dict) -> PipelineTrainer:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        model = build_model(job)
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"pipeline needs a torch.nn.Sequential model, got {type(model).__name__}")
        n = devices.world_size
        starts = list(knobs.get("balance") or balance(child_costs(model), n))
        bounds = starts + [len(model)]
        names = [name for name, _ in model.named_children()]
        mine = names[bounds[devices.rank]:bounds[devices.rank + 1]]
        stage_mod = nn.Sequential(OrderedDict((k, model.get_submodule(k)) for k in mine)).to(devices.device)
        del model
        stage = PipelineStage(stage_mod, devices.rank, n, devices.device)
        micro = int(knobs.get("microbatches", n))
        loss_fn = loss_of(job)
        sched_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[knobs.get("schedule", "1f1b")]
        schedule = sched_cls(stage, n_microbatches=micro, loss_fn=loss_fn)
        return PipelineTrainer(job, devices, stage_mod, schedule, n)
