"""The plan IR (contract: docs/contracts.md): where the planner, the stores, Airflow rendering and the UI meet.

`check_plan` implements the validity rules of docs/contracts.md; the planner runs it on its own output before
returning anything, and the tests run it on every plan they see.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from saturn_airflow.spec.documents import decode_json, parse_document
from saturn_airflow.errors import InvalidPlanError, NotFoundError
from saturn_airflow.spec.names import check_name
from saturn_airflow.spec.profile_table import ProfileTable

TIME_TOL = 1e-6


class SolverInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    status: str  # optimal | feasible | heuristic
    time_s: float = 0.0
    gap: Optional[float] = None


class Assignment(BaseModel):
    model_config = ConfigDict(extra="allow")

    job: str
    parallelism: str
    knobs: dict[str, Any] = Field(default_factory=dict)
    gpus: int
    node: str
    gpu_ids: list[int]
    start_s: float
    end_s: float
    after: list[str] = Field(default_factory=list)

    @field_validator("job")
    @classmethod
    def _job(cls, v: str) -> str:
        return check_name("job name", v)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        return check_name("node name", v)

    @property
    def runtime_s(self) -> float:
        return self.end_s - self.start_s


class Plan(BaseModel):
    model_config = ConfigDict(extra="allow")

    plan_id: str
    workload: str
    parent_plan_id: Optional[str] = None
    created_at: str
    makespan_s: float
    lower_bound_s: float
    solver: SolverInfo
    assignments: list[Assignment]
    # The lineage's root plan id: one run of the planning DAG and its re-plans are one sweep. Progress,
    # checkpoints, job leases and events are scoped to it, so a new run of the same workload trains
    # again from scratch while a re-plan resumes. Filled when the plan is published.
    sweep_id: Optional[str] = None

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: str) -> str:
        return check_name("workload name", v)

    @field_validator("plan_id", "parent_plan_id", "sweep_id")
    @classmethod
    def _ids(cls, v: Optional[str]) -> Optional[str]:
        return v if v is None else check_name("plan id", v)  # a file name and part of a DAG id

    @property
    def sweep(self) -> str:
        """The sweep this plan belongs to (a root plan that was never published: its own id)."""
        return self.sweep_id or self.plan_id

    def assignment(self, job: str) -> Assignment:
        for a in self.assignments:
            if a.job == job:
                return a
        raise NotFoundError(f"no job {job!r} in plan {self.plan_id}")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1)


def new_plan_id(workload: str) -> str:
    """Sortable, unique, safe in a DAG id: <workload>-<UTC time>-<random>."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in workload)[:40]
    return f"{safe}-{stamp}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def parse_plan(data, source: str = "plan") -> Plan:
    return parse_document(Plan, data, source, decode=decode_json)


def fill_after(assignments: list[Assignment]) -> None:
    """Set each assignment's `after` to the previous holders of its GPU ids (a validity rule)."""
    for a in assignments:
        prev: set[str] = set()
        for gid in a.gpu_ids:
            holders = [
                b for b in assignments
                if b is not a and b.node == a.node and gid in b.gpu_ids and b.end_s <= a.start_s + TIME_TOL
            ]
            if holders:
                prev.add(max(holders, key=lambda b: (b.end_s, b.start_s)).job)
        a.after = sorted(prev)


def plan_violations(plan: Plan, table: ProfileTable) -> list[str]:
    """Every way `plan` breaks the validity rules against `table` (empty list: valid)."""
    out: list[str] = []
    nodes = {n.name: n for n in table.cluster.nodes}
    seen: dict[str, int] = {}
    for a in plan.assignments:
        seen[a.job] = seen.get(a.job, 0) + 1
    for job in table.jobs:
        if seen.get(job.name, 0) != 1:
            out.append(f"job {job.name!r} appears {seen.get(job.name, 0)} times")
    for name in seen:
        if not any(j.name == name for j in table.jobs):
            out.append(f"assignment for unknown job {name!r}")
    for a in plan.assignments:
        node = nodes.get(a.node)
        if node is None:
            out.append(f"{a.job}: unknown node {a.node!r}")
            continue
        try:
            job = table.job(a.job)
        except KeyError:
            continue
        matches = [
            c for c in job.configs
            if c.parallelism == a.parallelism and c.gpus == a.gpus and c.knobs == a.knobs and c.fits(node)
        ]
        if not matches:
            out.append(f"{a.job}: ({a.parallelism}, {a.gpus} GPUs, {a.knobs}) is not a config of the job fitting {a.node}")
        elif not any(abs(a.runtime_s - c.runtime_s) <= 1e-6 * max(1.0, c.runtime_s) for c in matches):
            out.append(f"{a.job}: end_s - start_s = {a.runtime_s} differs from the config runtime {matches[0].runtime_s}")
        if len(set(a.gpu_ids)) != len(a.gpu_ids) or len(a.gpu_ids) != a.gpus:
            out.append(f"{a.job}: gpu_ids {a.gpu_ids} are not {a.gpus} distinct ids")
        if any(g < 0 or g >= node.gpus for g in a.gpu_ids):
            out.append(f"{a.job}: gpu_ids {a.gpu_ids} outside [0, {node.gpus}) of {a.node}")
        if a.start_s < -TIME_TOL:
            out.append(f"{a.job}: negative start {a.start_s}")
    by_node: dict[str, list[Assignment]] = {}
    for a in plan.assignments:
        by_node.setdefault(a.node, []).append(a)
    for node, items in by_node.items():
        items = sorted(items, key=lambda a: a.start_s)
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                if b.start_s >= a.end_s - TIME_TOL:
                    break
                shared = set(a.gpu_ids) & set(b.gpu_ids)
                if shared:
                    out.append(f"{a.job} and {b.job} share GPU {sorted(shared)} on {node} at overlapping times")
    if plan.assignments:
        top = max(a.end_s for a in plan.assignments)
        if abs(plan.makespan_s - top) > 1e-6 * max(1.0, top):
            out.append(f"makespan_s {plan.makespan_s} is not the largest end_s {top}")
    expected = [a.model_copy(deep=True) for a in plan.assignments]
    fill_after(expected)
    for a, e in zip(plan.assignments, expected):
        if sorted(a.after) != e.after:
            out.append(f"{a.job}: after {sorted(a.after)} should be {e.after}")
    return out


def check_plan(plan: Plan, table: ProfileTable) -> Plan:
    """Raise InvalidPlanError listing the violations; return the plan when valid."""
    bad = plan_violations(plan, table)
    if bad:
        raise InvalidPlanError(f"invalid plan {plan.plan_id}: " + "; ".join(bad[:5]) + (f" (+{len(bad) - 5})" if len(bad) > 5 else ""))
    return plan
