"""The profile table (DESIGN.md contract): the planner's whole input.

For every job, the configurations it can run in (parallelism, GPU count, knobs, optional GPU type)
with the predicted wall time of the whole job in each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saturn_airflow.spec.cluster import Cluster
from saturn_airflow.errors import SaturnInputError, pydantic_message


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
        raise KeyError(name)

    def feasible_configs(self, job: JobProfile, node) -> list[Config]:
        return [c for c in job.configs if c.fits(node)]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=1)


def parse_profile_table(data: Union[dict, str], source: str = "profile table") -> ProfileTable:
    """Validate a profile table from a dict or JSON text; SaturnInputError with one line on any problem."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise SaturnInputError(f"{source}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(data, dict):
        raise SaturnInputError(f"{source}: expected a JSON object with 'cluster' and 'jobs', got {type(data).__name__}")
    try:
        return ProfileTable.model_validate(data)
    except ValidationError as e:
        raise SaturnInputError(pydantic_message(source, e)) from None


def load_profile_table(path: Union[str, Path]) -> ProfileTable:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SaturnInputError(f"{path}: cannot read: {e.strerror}")
    return parse_profile_table(text, source=str(path))
