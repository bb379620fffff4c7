"""List scheduling with concrete GPU ids: the one place where (order, option per job) becomes start times.

Each job, in order, starts when `gpus` GPUs of its node are free and takes, among the GPUs free by
then, the ones that freed last (best fit), which keeps earlier-free GPUs for jobs that fit in before.
Given a MILP's options and start order, the list start of every job is no later than its MILP start
(docs/benchmarks-planner.md), so extraction never makes a plan worse and always yields valid ids.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from saturn_airflow.planner.instance import Instance, Option, Placement

EPS = 1e-9


class GpuState:
    """Per node, per GPU id: the time it is next free. Pinned jobs are pre-placed."""

    def __init__(self, inst: Instance, pinned_end=None):
        self.free = [[0.0] * g for g in inst.node_gpus]
        for f in inst.fixed.values():
            end = f.end if pinned_end is None else pinned_end(f)
            for g in f.gpu_ids:
                self.free[f.option.node][g] = max(self.free[f.option.node][g], end)

    def earliest_start(self, opt: Option, exclusive: bool = False) -> float:
        fl = self.free[opt.node]
        return max(fl) if exclusive else sorted(fl)[opt.gpus - 1]

    def place(self, job: int, opt: Option, duration: Optional[float] = None, exclusive: bool = False) -> Placement:
        fl = self.free[opt.node]
        start = self.earliest_start(opt, exclusive)
        ready = [k for k in range(len(fl)) if fl[k] <= start + EPS]
        ready.sort(key=lambda k: (-fl[k], k))
        ids = tuple(sorted(ready[: opt.gpus]))
        end = start + (opt.runtime if duration is None else duration)
        if exclusive:  # the job holds the whole node: nobody starts on it before it ends
            for k in range(len(fl)):
                fl[k] = end
        for k in ids:
            fl[k] = end
        return Placement(job, opt, ids, start, end)


def list_schedule(
    inst: Instance,
    order: Sequence[int],
    choice: dict[int, Option],
    durations: Optional[dict[int, float]] = None,
    exclusive: bool = False,
    pinned_end=None,
) -> list[Placement]:
    """Placements of the free jobs in `order` with their chosen options (fixed jobs included first)."""
    state = GpuState(inst, pinned_end)
    out = [f if pinned_end is None else dataclasses.replace(f, end=pinned_end(f)) for f in inst.fixed.values()]
    for j in order:
        out.append(state.place(j, choice[j], None if durations is None else durations[j], exclusive))
    return out


def makespan(placements: Sequence[Placement]) -> float:
    return max((p.end for p in placements), default=0.0)


def evaluate(inst: Instance, order: Sequence[int], choice: dict[int, Option], base_free=None) -> tuple[float, float]:
    """(makespan, sum of ends) of the list schedule, without building placements: the local search's score."""
    free = [list(f) for f in base_free] if base_free is not None else GpuState(inst).free
    top = max((f.end for f in inst.fixed.values()), default=0.0)
    total = 0.0
    for j in order:
        end = _place_end(free[choice[j].node], choice[j])
        total += end
        if end > top:
            top = end
    return top, total


def evaluate_node(order: Sequence[int], choice: dict[int, Option], node: int, base_free) -> tuple[float, float]:
    """(makespan, sum of ends) of one node's list schedule: nodes do not interact, so a move that touches
    one or two nodes is re-scored on those alone (the annealing's incremental score)."""
    fl = list(base_free[node])
    top = max(fl, default=0.0)
    total = 0.0
    for j in order:
        o = choice[j]
        if o.node == node:
            end = _place_end(fl, o)
            total += end
            if end > top:
                top = end
    return top, total


def _place_end(fl: list[float], o: Option) -> float:
    """Place one job on a node's free-time list in place (best fit, as GpuState.place) and return its end."""
    if o.gpus == 1:
        k = min(range(len(fl)), key=fl.__getitem__)
        end = fl[k] + o.runtime
        fl[k] = end
        return end
    start = sorted(fl)[o.gpus - 1]
    ready = [k for k in range(len(fl)) if fl[k] <= start + EPS]
    ready.sort(key=lambda k: (-fl[k], k))
    end = start + o.runtime
    for k in ready[: o.gpus]:
        fl[k] = end
    return end
