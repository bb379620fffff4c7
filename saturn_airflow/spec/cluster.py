"""The GPU cluster: named nodes, each with a GPU count and type. Shared by workloads, tables and plans."""

from __future__ import annotations

import os
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from saturn_airflow.errors import NotFoundError
from saturn_airflow.spec.names import check_name

CPU_DEVICE_TYPE = "cpu"
# Devices one node may have. Plans, leases, pools and charts hold per-device state, so an absurd size
# (a typo of 10**8) must fail as input, not as a MemoryError deep inside the planner.
MAX_GPUS_PER_NODE = 4096


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    gpus: int = Field(gt=0, description="devices on this node (GPUs, or CPU cores on a GPU-less machine)")
    gpu_type: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("node name", v)

    @field_validator("gpus")
    @classmethod
    def _size(cls, v: int) -> int:
        if v > MAX_GPUS_PER_NODE:
            raise ValueError(f"{v} devices on one node is past the limit of {MAX_GPUS_PER_NODE}")
        return v


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[Node] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "Cluster":
        seen: set[str] = set()
        for n in self.nodes:
            if n.name in seen:
                raise ValueError(f"duplicate node name {n.name!r}")
            seen.add(n.name)
        return self

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise NotFoundError(f"no node {name!r} in the cluster")

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)


def local_cluster() -> Cluster:
    """This machine: its CUDA GPUs if any, else one device per CPU core (process pinned, one thread)."""
    gpus, gpu_type = 0, None
    try:  # torch is optional for planning; without it we fall back to CPU cores.
        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            gpu_type = torch.cuda.get_device_name(0).lower().replace(" ", "-")
    except ImportError:
        pass
    if gpus == 0:
        gpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        gpu_type = CPU_DEVICE_TYPE
    return Cluster(nodes=[Node(name="local", gpus=min(gpus, MAX_GPUS_PER_NODE), gpu_type=gpu_type)])
