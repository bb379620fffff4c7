"""`fsdp`: FSDP2 (`fully_shard`) per block plus the root; parameters, gradients and optimizer state sharded.

Knobs: `checkpoint` (activation recomputation), `offload` (parameters and optimizer state in host
memory, streamed per block), `mixed_precision` ("bf16" parameters with fp32 reduction, only where
the device supports bf16). Candidates go fastest-first; memory savers come only after a plain
config fails to fit, and bf16 (which changes the numbers) only when fp32 cannot fit at all.
"""

from __future__ import annotations

import torch

from saturn_airflow.execution.devices import Devices, supports_bf16
from saturn_airflow.parallelisms.base import DataParallelTrainer, Parallelism, apply_activation_checkpointing, blocks, build_model, make_optimizer


def shard_model(job, devices: Devices, knobs: dict):
    """Build the job's model and shard it with FSDP2 on a 1-D mesh over this launch's ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    # built in host memory and not moved as a whole: fully_shard moves each unit to the mesh's device
    # and shards it there (one unit's full size at a time), or keeps the shards on the host (offload)
    model = build_model(job)
    offload = bool(knobs.get("offload"))
    if knobs.get("checkpoint"):
        apply_activation_checkpointing(blocks(model))
    mesh = init_device_mesh(devices.device.type, (devices.world_size,))
    kw = {"mesh": mesh, "reshard_after_forward": knobs.get("reshard_after_forward", True)}
    if offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=devices.kind == "cuda")
    if knobs.get("mixed_precision") == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for unit in blocks(model):
        fully_shard(unit, **kw)
    fully_shard(model, **kw)
    return model


class FSDP(Parallelism):
    name = "fsdp"
    min_devices = 1
    dominated_by = "single"  # on one device it only adds overhead; tried there only if single fails

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        c = [{}, {"checkpoint": True}]
        if devices.kind == "cuda":  # on a CPU device "offload" is a host-to-host copy: never helps
            c.append({"checkpoint": True, "offload": True})
        if supports_bf16(devices):
            c += [{"checkpoint": True, "mixed_precision": "bf16"},
                  {"checkpoint": True, "offload": True, "mixed_precision": "bf16"}]
        return c

    def build(self, job, devices: Devices, knobs: dict) -> DataParallelTrainer:
        model = shard_model(job, devices, knobs)
        opt = make_optimizer(model.parameters(), job.optimizer)
        return DataParallelTrainer(job, devices, model, opt)
