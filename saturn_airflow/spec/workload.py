"""The workload (contract: docs/contracts.md): what a user writes in YAML, loaded, validated and grid-expanded.

Validation never imports torch or the user's factories; it checks shapes, names and references
that can be checked statically, so a bad workload fails in milliseconds with one line.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saturn_airflow.spec.cluster import Cluster, local_cluster
from saturn_airflow.spec.names import check_name
from saturn_airflow.spec.documents import decode_yaml, parse_document, read_document
from saturn_airflow.errors import NotFoundError, pydantic_message

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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


BUILTIN_METRICS = ("loss", "accuracy")
DEFAULT_GOALS = {"loss": "min", "accuracy": "max"}


def metric_name(metric: str) -> str:
    """What a metric is called in records: a built-in's name, or a factory's function name."""
    return metric.rpartition(":")[2]


class EvaluationSpec(BaseModel):
    """Held-out evaluation of a job: which batches, how often, which metrics, which way is better.

    `data` is `fn(index, batch_size, **data_args) -> (inputs, targets)`, deterministic in `index`
    (batches 0..batches-1 are the held-out set); without `data` the job's own factory is used with
    the job's data_args updated by these (e.g. another seed). A metric is `loss` (the job's loss),
    `accuracy` (argmax over the last dimension equals the target), or `fn(outputs, targets)` giving
    the mean over the batch's rows, so its average over rows is the same however the rows are split.
    """

    model_config = ConfigDict(extra="forbid")

    data: Optional[str] = None
    data_args: dict[str, Any] = Field(default_factory=dict)
    batches: int = Field(default=4, gt=0)
    batch_size: Optional[int] = Field(default=None, gt=0)  # default: the job's batch_size
    every_steps: Optional[int] = Field(default=None, gt=0)  # and always at the last step
    metrics: list[str] = Field(default_factory=lambda: ["loss"], min_length=1)
    metric: Optional[str] = None  # the one that ranks jobs (default: the first of metrics)
    goal: Optional[Literal["min", "max"]] = None  # default: min for loss, max for accuracy

    @field_validator("data")
    @classmethod
    def _data(cls, v):
        return v if v is None else _import_path(v)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        for m in v:
            if m not in BUILTIN_METRICS and not _IMPORT_PATH.match(m):
                raise ValueError(f"metric {m!r} is neither a built-in ({', '.join(BUILTIN_METRICS)}) "
                                 "nor an import path 'package.module:function'")
        names = [metric_name(m) for m in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two metrics are named {dup[0]!r}")
        return v

    @model_validator(mode="after")
    def _ranking(self) -> "EvaluationSpec":
        names = [metric_name(m) for m in self.metrics]
        if self.metric is None:
            self.metric = names[0]
        elif self.metric not in names:
            raise ValueError(f"metric {self.metric!r} is not one of metrics ({', '.join(names)})")
        if self.goal is None:
            if self.metric not in DEFAULT_GOALS:
                raise ValueError(f"goal: say min or max for metric {self.metric!r}")
            self.goal = DEFAULT_GOALS[self.metric]
        return self

    @property
    def names(self) -> list[str]:
        return [metric_name(m) for m in self.metrics]


FORWARD_SHARE = 1.0 / 3.0  # a forward pass is about a third of a training step (forward, backward, update)


def evaluation_steps(job: "JobSpec") -> float:
    """What a job's held-out evaluations cost, in training steps: evaluations x batches x rows, one
    forward pass each (the profiler adds this to the steps it times, so plans include evaluation)."""
    ev = job.evaluation
    if ev is None:
        return 0.0
    n = (job.steps // ev.every_steps if ev.every_steps else 0) + (0 if ev.every_steps and job.steps % ev.every_steps == 0 else 1)
    rows = (ev.batch_size or job.batch_size) / job.batch_size
    return n * ev.batches * rows * FORWARD_SHARE


def merged_evaluation(top: Any, job: Any) -> Any:
    """A job's evaluation: its own keys over the workload's (`evaluation: null` on a job turns it off)."""
    if isinstance(job, dict) and "evaluation" in job:
        own = job["evaluation"]
        if own is None:
            return None
        if isinstance(top, dict) and isinstance(own, dict):
            return {**top, **own}
        return own
    return top


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
    evaluation: Optional[EvaluationSpec] = None  # held-out metrics (the workload's, merged with the job's)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("job name", v)

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
    evaluation: Optional[dict[str, Any]] = None  # every job's, unless the job has its own keys

    @model_validator(mode="before")
    @classmethod
    def _evaluation_per_job(cls, data: Any) -> Any:
        """Merge the workload's evaluation into each job and check it there, so an error names the job."""
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            return data
        top = data.get("evaluation")
        if top is not None and not isinstance(top, dict):
            raise ValueError(f"evaluation: expected a mapping, got {type(top).__name__}")
        jobs = []
        for i, job in enumerate(data["jobs"]):
            ev = merged_evaluation(top, job)
            if isinstance(job, dict) and ev is not None:
                where = f"job {job.get('name')!r}" if job.get("name") else f"job #{i + 1}"
                if not isinstance(ev, dict):
                    raise ValueError(f"{where}: evaluation: expected a mapping, got {type(ev).__name__}")
                try:
                    ev = EvaluationSpec.model_validate(ev).model_dump()
                except ValidationError as e:
                    raise ValueError(pydantic_message(f"{where}: evaluation", e)) from None
                job = {**job, "evaluation": ev}
            jobs.append(job)
        return {**data, "jobs": jobs}

    @field_validator("name")
    @classmethod
    def _wl_name(cls, v: str) -> str:
        return check_name("workload name", v)

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
