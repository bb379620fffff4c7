"""Early stopping in the workload: successive halving over groups of jobs that compete.

    early_stop:
      metric: loss        # a held-out metric every job of a group evaluates, or train_loss
      rungs: [100, 300]   # steps at which the jobs of a group are compared
      keep: 0.5           # the share of a group that goes past each rung (at least one job)
      group: model        # how competing jobs are formed (below)
      goal: min           # optional: min | max (default: the evaluation's goal for that metric)

Groups. A group is a set of jobs whose metric values can be compared; successive halving runs in
each group on its own:
  model (default)  jobs that train the same model (the same `model` factory with the same
                   `model_args`) and differ in hyper-parameters: optimizer, learning rate, batch size,
                   seed, data arguments. A grid over `optimizer.lr` gives one group.
  all              every job of the workload in one group (model selection across architectures).
  {name: [pattern, ...], ...}  explicit groups: job names or shell patterns (`gpt-small-*`) per
                   group; a job may be in one group only.
A group of one job is never stopped early. The metric of a job at a rung is its held-out evaluation
at that step (the job's `evaluation` is run at every rung); `train_loss` uses the training loss
recorded beside that evaluation instead. Validation imports nothing heavy.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

TRAIN_LOSS = "train_loss"
DEFAULT_GOALS = {"loss": "min", TRAIN_LOSS: "min", "accuracy": "max"}
GROUP_RULES = ("model", "all")


class EarlyStopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Optional[str] = None  # default: the jobs' evaluation metric
    rungs: list[int] = Field(min_length=1)
    keep: float = Field(default=0.5, gt=0, lt=1)
    group: Union[Literal["model", "all"], dict[str, list[str]]] = "model"
    goal: Optional[Literal["min", "max"]] = None

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(r <= 0 for r in v):
            raise ValueError(f"rungs must be positive step counts, got {v}")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"rungs must be strictly increasing, got {v}")
        return v

    @field_validator("group")
    @classmethod
    def _groups(cls, v):
        if isinstance(v, dict):
            if not v:
                raise ValueError("group: give at least one group, or model / all")
            for name, patterns in v.items():
                if not patterns:
                    raise ValueError(f"group {name!r}: list at least one job name or pattern")
        return v


def _evaluation(job) -> Any:
    return getattr(job, "evaluation", None)


def _metric_names(job) -> list[str]:
    ev = _evaluation(job)
    if ev is None:
        return []
    names = getattr(ev, "names", None)
    return list(names) if names is not None else [str(m).rpartition(":")[2] for m in getattr(ev, "metrics", [])]


def _model_key(job) -> str:
    return f"{job.model} {json.dumps(job.model_args, sort_keys=True, default=str)}"


def _model_group_name(job) -> str:
    args = ",".join(f"{k}={job.model_args[k]}" for k in sorted(job.model_args))
    name = job.model.rpartition(":")[2] + (f"({args})" if args else "")
    return name if len(name) <= 60 else name[:57] + "..."


def form_groups(spec: EarlyStopSpec, jobs: list) -> dict[str, list[str]]:
    """Group name -> job names (workload order). Jobs in no explicit group are left out: they run to the end."""
    if spec.group == "all":
        return {"all": [j.name for j in jobs]}
    if spec.group == "model":
        out: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for j in jobs:
            key = _model_key(j)
            if key not in names:
                base = _model_group_name(j)
                taken = set(names.values())
                name, k = base, 2
                while name in taken:  # the same factory with other args: model, model#2, ...
                    name, k = f"{base}#{k}", k + 1
                names[key] = name
            out.setdefault(names[key], []).append(j.name)
        return out
    out = {}
    owner: dict[str, str] = {}
    for group, patterns in spec.group.items():
        members = []
        for pat in patterns:
            hits = [j.name for j in jobs if fnmatch.fnmatchcase(j.name, pat)]
            if not hits:
                raise ValueError(f"early_stop.group {group!r}: {pat!r} matches no job")
            members += [h for h in hits if h not in members]
        for m in members:
            if m in owner and owner[m] != group:
                raise ValueError(f"early_stop.group: job {m!r} is in both {owner[m]!r} and {group!r}")
            owner[m] = group
        out[group] = [j.name for j in jobs if j.name in members]
    return out


def metric_of(spec: EarlyStopSpec, jobs: list) -> str:
    """The metric the jobs are compared on: the spec's, else the first job's evaluation ranking metric."""
    if spec.metric:
        return spec.metric
    for j in jobs:
        ev = _evaluation(j)
        if ev is not None and getattr(ev, "metric", None):
            return ev.metric
    return TRAIN_LOSS


def goal_of(spec: EarlyStopSpec, jobs: list, metric: str) -> str:
    if spec.goal:
        return spec.goal
    for j in jobs:
        ev = _evaluation(j)
        if ev is not None and getattr(ev, "metric", None) == metric and getattr(ev, "goal", None):
            return ev.goal
    if metric in DEFAULT_GOALS:
        return DEFAULT_GOALS[metric]
    raise ValueError(f"early_stop: say goal: min or max for metric {metric!r}")


class Halving(BaseModel):
    """The resolved early-stop setup of a workload: what plans and the policy carry (JSON-able)."""

    model_config = ConfigDict(extra="allow")

    metric: str
    goal: Literal["min", "max"]
    keep: float
    rungs: list[int]
    groups: dict[str, list[str]]  # only groups of two or more jobs
    steps: dict[str, int]  # every job's total steps (jobs in no group run whole)

    def group_of(self, job: str) -> Optional[str]:
        for g, members in self.groups.items():
            if job in members:
                return g
        return None

    def rungs_of(self, job: str) -> list[int]:
        """The rungs a job stops at to be compared (none for a job in no group)."""
        return list(self.rungs) if self.group_of(job) else []

    def segment_end(self, job: str, step: int, total: Optional[int] = None) -> int:
        """Where the job's next segment ends: its next rung after `step`, else its last step."""
        total = self.steps[job] if total is None else total
        for r in self.rungs_of(job):
            if r > step:
                return r
        return int(total)


def resolve(spec: EarlyStopSpec, jobs: list) -> Halving:
    """Check the spec against the (grid-expanded) jobs and resolve groups, metric and goal; ValueError names the problem."""
    groups = {g: m for g, m in form_groups(spec, jobs).items() if len(m) >= 2}
    by_name = {j.name: j for j in jobs}
    metric = metric_of(spec, jobs)
    grouped = [by_name[m] for ms in groups.values() for m in ms]
    for g, members in groups.items():
        for m in members:
            job = by_name[m]
            if _evaluation(job) is None:
                raise ValueError(f"early_stop: job {m!r} (group {g!r}) has no evaluation; successive halving "
                                 "compares jobs on their held-out evaluation at every rung (add `evaluation:`)")
            if metric != TRAIN_LOSS and metric not in _metric_names(job):
                raise ValueError(f"early_stop: metric {metric!r} is not evaluated by job {m!r} "
                                 f"(its metrics: {', '.join(_metric_names(job)) or '-'}; or use {TRAIN_LOSS})")
            if spec.rungs[-1] >= job.steps:
                raise ValueError(f"early_stop: rung {spec.rungs[-1]} is not below the {job.steps} steps of job {m!r}")
    goal = goal_of(spec, grouped or jobs, metric)
    return Halving(metric=metric, goal=goal, keep=spec.keep, rungs=list(spec.rungs), groups=groups,
                   steps={j.name: j.steps for j in jobs})


__all__ = ["EarlyStopSpec", "Halving", "resolve", "form_groups", "TRAIN_LOSS", "GROUP_RULES"]
