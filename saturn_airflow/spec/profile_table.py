"""The profile table (contract: docs/contracts.md): the planner's whole input.

For every job, the configurations it can run in (parallelism, GPU count, knobs, optional GPU type)
with the predicted wall time of the whole job in each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from saturn_airflow.spec.cluster import Cluster
from saturn_airflow.spec.names import check_name
from saturn_airflow.spec.documents import decode_json, parse_document, read_document
from saturn_airflow.errors import NotFoundError


T = TypeVar("T")


class Config(BaseModel):
    model_config = ConfigDict(extra="allow")

    parallelism: str = Field(min_length=1)
    gpus: int = Field(gt=0)
    runtime_s: float = Field(gt=0)
    knobs: dict[str, Any] = Field(default_factory=dict)
    gpu_type: Optional[str] = None
    node: Optional[str] = None  # only on this node (a re-plan's estimate for a node that runs it slower)

    @field_validator("runtime_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("runtime_s must be a finite number of seconds")
        return v

    def fits(self, node) -> bool:
        return (self.gpus <= node.gpus and (self.gpu_type is None or self.gpu_type == node.gpu_type)
                and (self.node is None or self.node == node.name))

    def key(self) -> tuple:
        """Identity of a config inside a job: what a plan assignment must match."""
        key = (self.parallelism, self.gpus, json.dumps(self.knobs, sort_keys=True), self.gpu_type)
        return key if self.node is None else key + (self.node,)


class JobProfile(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    configs: list[Config] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("job name", v)  # the workload's rule: it becomes a task id and a store path


class ProfileTable(BaseModel):
    model_config = ConfigDict(extra="allow")

    cluster: Cluster
    jobs: list[JobProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "ProfileTable":
        seen: set[str] = set()
        for job in self.jobs:
            if job.name in seen:
                raise ValueError(f"duplicate job name {job.name!r}")
            seen.add(job.name)
            if not any(c.fits(n) for c in job.configs for n in self.cluster.nodes):
                need = min(c.gpus for c in job.configs)
                raise ValueError(
                    f"job {job.name!r} fits no node: its smallest config needs {need} GPUs "
                    f"(largest node has {max(n.gpus for n in self.cluster.nodes)}) or its gpu_type matches no node"
                )
        return self

    def job(self, name: str) -> JobProfile:
        for j in self.jobs:
            if j.name == name:
                return j
        raise NotFoundError(f"no job {name!r} in the profile table")

    def feasible_configs(self, job: JobProfile, node) -> list[Config]:
        return [c for c in job.configs if c.fits(node)]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=1)


def undominated(items: Sequence[T], gpus: Callable[[T], int], runtime: Callable[[T], float]) -> list[T]:
    """The items no other item beats (as fast or faster on as many GPUs or fewer, one of them strictly;
    of exact twins the first stays), in their order. A dominated config can be swapped for its
    dominator in any schedule without making it longer, so dropping it never changes the optimum."""
    return [c for i, c in enumerate(items) if not any(
        k != i and gpus(o) <= gpus(c) and runtime(o) <= runtime(c) and (gpus(o) < gpus(c) or runtime(o) < runtime(c) or k < i)
        for k, o in enumerate(items))]


def parse_profile_table(data: Union[dict, str], source: str = "profile table") -> ProfileTable:
    """Validate a profile table from a dict or JSON text; SaturnInputError with one line on any problem."""
    return parse_document(ProfileTable, data, source, decode=decode_json,
                          expects="a JSON object with 'cluster' and 'jobs'")


def load_profile_table(path: Union[str, Path]) -> ProfileTable:
    return parse_profile_table(*read_document(path))
