"""The workload (contract: docs/contracts.md): what a user writes in YAML, loaded, validated and grid-expanded.

Validation never imports torch or the user's factories; it checks shapes, names and references
that can be checked statically, so a bad workload fails in milliseconds with one line.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saturn_airflow.spec.cluster import Cluster, local_cluster
from saturn_airflow.spec.documents import decode_yaml, parse_document, read_document
from saturn_airflow.errors import NotFoundError, pydantic_message

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def registered_parallelism_names() -> list[str]:
    """Every registered parallelism's name (the registry imports no torch)."""
    from saturn_airflow.parallelisms import registry

    return sorted(registry())


class OptimizerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # extra keys go to the torch optimizer (weight_decay, betas...)

    name: str = "adamw"
    lr: float = Field(default=1e-3, gt=0)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.lower() not in ("adamw", "adam", "sgd"):
            raise ValueError(f"unknown optimizer {v!r} (known: adamw, adam, sgd)")
        return v.lower()


def _import_path(v: str) -> str:
    if not _IMPORT_PATH.match(v):
        raise ValueError(f"{v!r} is not an import path of the form 'package.module:function'")
    return v


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    data: str
    data_args: dict[str, Any] = Field(default_factory=dict)
    loss: Optional[str] = None
    batch_size: int = Field(gt=0)
    steps: int = Field(gt=0)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    seed: int = 0
    parallelisms: Optional[list[str]] = None  # per-job restriction of the workload's list

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _JOB_NAME.match(v) or len(v) > 200:
            raise ValueError(f"job name {v!r} must start with a letter or digit and hold only letters, digits, '-', '_', '.'")
        return v

    @field_validator("model", "data", "loss")
    @classmethod
    def _paths(cls, v):
        return v if v is None else _import_path(v)


class Workload(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    # Filled with this machine (`local_cluster`, which imports torch) only after everything else
    # validated, so a bad workload fails fast.
    cluster: Optional[Cluster] = None
    parallelisms: list[str] = Field(default_factory=registered_parallelism_names)
    jobs: list[JobSpec] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _wl_name(cls, v: str) -> str:
        if not _JOB_NAME.match(v):
            raise ValueError(f"workload name {v!r} must hold only letters, digits, '-', '_', '.'")
        return v

    @field_validator("parallelisms")
    @classmethod
    def _known_parallelisms(cls, v: list[str]) -> list[str]:
        known = registered_parallelism_names()
        for p in v:
            if p not in known:
                raise ValueError(f"unknown parallelism {p!r} (registered: {', '.join(known)})")
        if not v:
            raise ValueError("parallelisms must name at least one parallelism")
        return v

    @model_validator(mode="after")
    def _expand_and_check(self) -> "Workload":
        if self.cluster is None:
            self.cluster = local_cluster()
        if self.grid:
            self.jobs = expand_grid(self.jobs, self.grid)
            self.grid = {}
        seen: set[str] = set()
        for j in self.jobs:
            if j.name in seen:
                raise ValueError(f"duplicate job name {j.name!r}")
            seen.add(j.name)
            for p in j.parallelisms or []:
                if p not in self.parallelisms:
                    raise ValueError(f"job {j.name!r}: parallelism {p!r} is not in the workload's parallelisms")
        return self

    def job(self, name: str) -> JobSpec:
        for j in self.jobs:
            if j.name == name:
                return j
        raise NotFoundError(f"no job {name!r} in workload {self.name!r}")

    def parallelisms_for(self, job: JobSpec) -> list[str]:
        return list(job.parallelisms or self.parallelisms)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


_SHORT = {"optimizer.lr": "lr", "batch_size": "b", "seed": "s", "steps": "n"}


def expand_grid(jobs: list[JobSpec], grid: dict[str, list[Any]]) -> list[JobSpec]:
    """jobs x grid: every combination of the grid's values set on a copy of every job.

    A key is a dotted path into the job (`optimizer.lr`, `model_args.d_model`, `batch_size`);
    the job's name gets a readable suffix per key (`-lr0.0001-b32`).
    """
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key}: expected a non-empty list of values")
        head = key.split(".")[0]
        if head not in JobSpec.model_fields or head == "name":
            raise ValueError(f"grid.{key}: {head!r} is not a job field")
    out: list[JobSpec] = []
    keys = list(grid)
    for job in jobs:
        for combo in itertools.product(*(grid[k] for k in keys)):
            d = job.model_dump()
            suffix = []
            for key, val in zip(keys, combo):
                parts = key.split(".")
                tgt = d
                for p in parts[:-1]:
                    if not isinstance(tgt.get(p), dict):
                        tgt[p] = {} if tgt.get(p) is None else tgt[p]
                    tgt = tgt[p]
                tgt[parts[-1]] = copy.deepcopy(val)
                suffix.append(f"{_SHORT.get(key, parts[-1])}{_fmt(val)}")
            d["name"] = "-".join([job.name] + suffix)
            try:
                out.append(JobSpec.model_validate(d))
            except ValidationError as e:
                raise ValueError(pydantic_message(f"grid job {d['name']}", e)) from None
    return out


def parse_workload(data: Union[dict, str], source: str = "workload") -> Workload:
    return parse_document(Workload, data, source, decode=decode_yaml, expects="a mapping with 'name' and 'jobs'")


def load_workload(path: Union[str, Path]) -> Workload:
    return parse_workload(*read_document(path))
