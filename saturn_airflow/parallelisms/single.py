"""`single`: the whole job on one device, no wrapper. The reference every other parallelism must match."""

from __future__ import annotations

from saturn_airflow.execution.devices import Devices
from saturn_airflow.parallelisms.base import DataParallelTrainer, Parallelism, apply_activation_checkpointing, blocks, build_model, make_optimizer


class Single(Parallelism):
    name = "single"
    min_devices = 1
    max_devices = 1

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        return [{}, {"checkpoint": True}]  # recompute activations only if the plain step does not fit

    def build(self, job, devices: Devices, knobs: dict) -> DataParallelTrainer:
        model = build_model(job).to(devices.device)
        if knobs.get("checkpoint"):
            apply_activation_checkpointing(blocks(model))
        return DataParallelTrainer(job, devices, model, make_optimizer(model.parameters(), job.optimizer))
