"""`ddp`: torch DistributedDataParallel; each rank takes its rows of the (unchanged) global batch."""

from __future__ import annotations

from torch.nn.parallel import DistributedDataParallel

from saturn_airflow.execution.devices import Devices
from saturn_airflow.parallelisms.base import DataParallelTrainer, Parallelism, apply_activation_checkpointing, blocks, build_model, make_optimizer


class DDP(Parallelism):
    name = "ddp"
    min_devices = 2  # DDP on one device is `single` plus overhead

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        return [{}, {"checkpoint": True}]

    def build(self, job, devices: Devices, knobs: dict) -> DataParallelTrainer:
        model = build_model(job).to(devices.device)
        if knobs.get("checkpoint"):
            apply_activation_checkpointing(blocks(model))
        ids = [devices.local_rank] if devices.kind == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=knobs.get("bucket_cap_mb", 25))
        opt = make_optimizer(ddp.parameters(), job.optimizer)
        return DataParallelTrainer(job, devices, ddp, opt)
