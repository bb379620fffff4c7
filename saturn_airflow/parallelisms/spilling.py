"""`spilling`: one device runs a model bigger than its memory; parameters, gradients and optimizer
state live in host memory and are streamed to the device one block at a time, activations recomputed.

Expressed as FSDP2 at world size 1 with a CPU offload policy plus activation checkpointing: the
maintained code path, prefetching included, instead of a hand-written copy loop. It never beats `single` where `single` fits, so the profiler only tries it when `single` fails.
"""

from __future__ import annotations

from saturn_airflow.execution.devices import Devices
from saturn_airflow.parallelisms.base import DataParallelTrainer, Parallelism, make_optimizer
from saturn_airflow.parallelisms.fsdp import shard_model


class Spilling(Parallelism):
    name = "spilling"
    min_devices = 1
    max_devices = 1
    dominated_by = "single"

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        return [{"offload": True, "checkpoint": True}]

    def build(self, job, devices: Devices, knobs: dict) -> DataParallelTrainer:
        knobs = {"offload": True, "checkpoint": True, **knobs}
        model = shard_model(job, devices, knobs)
        opt = make_optimizer(model.parameters(), job.optimizer)  # steps on the host copies
        return DataParallelTrainer(job, devices, model, opt)
