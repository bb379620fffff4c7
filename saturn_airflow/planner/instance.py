"""The planner's internal view of a profile table: jobs x options (config, node), with dominated options pruned.

An option is one config placed on one node. Pruning drops an option when another option of the
same job on the same node needs no more GPUs and runs no longer: any schedule using the dominated
option stays valid, and ends no later, with the dominating one, so no optimum is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.spec.profile_table import ProfileTable, undominated


@dataclass(frozen=True)
class PinnedJob:
    """A job kept running where it is during a re-plan; its single table config is its remaining runtime."""

    node: str
    gpu_ids: list[int]
    start_s: float = 0.0


@dataclass(frozen=True)
class Option:
    config: int  # index into the job's configs in the table
    node: int  # index into the cluster's nodes
    gpus: int
    runtime: float


@dataclass(frozen=True)
class Placement:
    """A job's place: its option, concrete GPU ids and interval (a pinned job's is given up front)."""

    job: int
    option: Option
    gpu_ids: tuple[int, ...]
    start: float
    end: float


@dataclass
class Instance:
    table: ProfileTable
    job_names: list[str]
    node_names: list[str]
    node_gpus: list[int]
    options: list[list[Option]]  # per job; empty for pinned jobs
    fixed: dict[int, Placement] = field(default_factory=dict)
    all_options: list[list[Option]] = field(default_factory=list)  # unpruned: what the baselines see

    @property
    def free_jobs(self) -> list[int]:
        return [j for j in range(len(self.job_names)) if j not in self.fixed]

    @property
    def total_gpus(self) -> int:
        return sum(self.node_gpus)


def _prune(options: list[Option]) -> list[Option]:
    """A job's undominated options on each node (nodes do not compete: a node's option stays even when
    another node offers a better one), in their order."""
    kept: set[int] = set()
    for node in {o.node for o in options}:
        on_node = [o for o in options if o.node == node]
        kept.update(id(o) for o in undominated(on_node, gpus=lambda o: o.gpus, runtime=lambda o: o.runtime))
    return [o for o in options if id(o) in kept]


def build_instance(table: ProfileTable, pinned: Optional[dict] = None) -> Instance:
    """Options per job (pruned) and the fixed places of pinned jobs; SaturnInputError on a bad pin."""
    nodes = table.cluster.nodes
    node_index = {n.name: i for i, n in enumerate(nodes)}
    options: list[list[Option]] = []
    all_options: list[list[Option]] = []
    fixed: dict[int, Placement] = {}
    pinned = pinned or {}
    names = [j.name for j in table.jobs]
    for name in pinned:
        if name not in names:
            raise SaturnInputError(f"pinned job {name!r} is not in the profile table")
    for j, job in enumerate(table.jobs):
        opts = [
            Option(ci, ni, c.gpus, float(c.runtime_s))
            for ci, c in enumerate(job.configs)
            for ni, n in enumerate(nodes)
            if c.fits(n)
        ]
        pin = pinned.get(job.name)
        all_options.append(opts if pin is None else [])
        if pin is None:
            options.append(_prune(opts))
            continue
        if pin.node not in node_index:
            raise SaturnInputError(f"pinned job {job.name!r}: unknown node {pin.node!r}")
        ni = node_index[pin.node]
        ids = tuple(int(g) for g in pin.gpu_ids)
        if len(set(ids)) != len(ids) or any(g < 0 or g >= nodes[ni].gpus for g in ids):
            raise SaturnInputError(f"pinned job {job.name!r}: gpu_ids {list(ids)} are not distinct ids of {pin.node}")
        match = [o for o in opts if o.node == ni and o.gpus == len(ids)]
        if not match:
            raise SaturnInputError(f"pinned job {job.name!r}: no config with {len(ids)} GPUs fits {pin.node}")
        if pin.start_s < 0:
            raise SaturnInputError(f"pinned job {job.name!r}: negative start_s {pin.start_s}")
        o = match[0]
        fixed[j] = Placement(j, o, ids, float(pin.start_s), float(pin.start_s) + o.runtime)
        options.append([])
    _check_pins_disjoint(fixed, names)
    return Instance(table, names, [n.name for n in nodes], [n.gpus for n in nodes], options, fixed, all_options)


def _check_pins_disjoint(fixed: dict[int, Placement], names: list[str]) -> None:
    items = list(fixed.values())
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if a.option.node == b.option.node and set(a.gpu_ids) & set(b.gpu_ids) and a.start < b.end and b.start < a.end:
                raise SaturnInputError(f"pinned jobs {names[a.job]!r} and {names[b.job]!r} share GPUs at overlapping times")
