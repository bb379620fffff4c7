"""A user-defined parallelism, the worked example of docs/parallelisms.md: DDP with gradient accumulation.

Each rank splits its rows of the global batch into `accum` chunks and accumulates gradients
(synchronising only on the last chunk), trading speed for activation memory. The global batch,
and therefore the training result, is unchanged. Register it with one pyproject line:

    [project.entry-points."saturn_airflow.parallelisms"]
    ddp-accum = "saturn_airflow.examples.custom_parallelism:AccumDDP"
"""

from __future__ import annotations

import contextlib

from torch.nn.parallel import DistributedDataParallel

from saturn_airflow.parallelisms.base import (
    Parallelism, Trainer, build_model, global_batch, loss_of, make_optimizer, mean_over_ranks, rows, to_device)


class AccumTrainer(Trainer):
    def __init__(self, job, devices, model, optimizer, accum: int):
        self.job, self.devices, self.model, self.optimizer, self.accum = job, devices, model, optimizer, accum
        self.loss_fn = loss_of(job)

    def step(self, step: int) -> float:
        d = self.devices
        x, y = global_batch(self.job, step)
        x, y = rows(x, d.rank, d.world_size), rows(y, d.rank, d.world_size)
        total = 0.0
        for i, (xc, yc) in enumerate(zip(x.chunk(self.accum), y.chunk(self.accum))):
            last = i == self.accum - 1
            with contextlib.nullcontext() if last else self.model.no_sync():  # all-reduce once per step
                loss = self.loss_fn(self.model(to_device(xc, d.device)), to_device(yc, d.device)) / self.accum
                loss.backward()
            total = total + loss.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_over_ranks(total, d)


class AccumDDP(Parallelism):
    min_devices = 2

    def check(self, job, n_devices):
        reason = super().check(job, n_devices)
        if reason is None and (job.batch_size // n_devices) % 2:
            return f"per-device batch {job.batch_size // n_devices} cannot be split into 2 accumulation chunks"
        return reason

    def knob_candidates(self, job, devices):
        per_rank = job.batch_size // devices.world_size
        return [{"accum": a} for a in (2, 4, 8) if per_rank % a == 0]  # fewer chunks first: faster

    def build(self, job, devices, knobs):
        model = build_model(job).to(devices.device)
        ids = [devices.local_rank] if devices.kind == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        return AccumTrainer(job, devices, ddp, make_optimizer(ddp.parameters(), job.optimizer), int(knobs.get("accum", 2)))
