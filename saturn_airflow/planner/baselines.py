"""Saturn's baselines (Saturn paper, section 4.3), each a (order, options) list schedule.

All use the profile table as an oracle: the best config for the GPU count they choose.
- current-practice: every job alone on all GPUs of a node, its fastest config there, in input order.
- max-heuristic: the same allocation, longest job first on the earliest-free node.
- min-heuristic: one GPU per job (spilling if that is what fits), leftover GPUs split evenly.
- optimus-greedy: Optimus* Alg. 1: start each job at its fewest GPUs, repeatedly give one more GPU
  to the job that gains the most, per node for multi-node clusters; then list-schedule.
- random: random option and order (seeded).
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from saturn_airflow.planner.instance import Instance, Option
from saturn_airflow.planner.list_scheduler import GpuState, Placement, list_schedule

BASELINES = ("current-practice", "max-heuristic", "min-heuristic", "optimus-greedy", "random")


def _fastest(opts: list[Option]) -> Option:
    return min(opts, key=lambda o: (o.runtime, o.gpus))


def _whole_node_choice(inst: Instance, j: int, node: int) -> Option:
    """Fastest option using all of `node`'s GPUs, else the widest that fits it (still holding the node)."""
    here = [o for o in inst.all_options[j] if o.node == node]
    if not here:
        return None
    full = [o for o in here if o.gpus == inst.node_gpus[node]]
    if full:
        return _fastest(full)
    widest = max(o.gpus for o in here)
    return _fastest([o for o in here if o.gpus == widest])


def _sequential(inst: Instance, order: list[int]) -> list[Placement]:
    """Each job, in order, holds a whole node: the node where it finishes first."""
    state = GpuState(inst)
    out = list(inst.fixed.values())
    for j in order:
        cands = [o for o in (_whole_node_choice(inst, j, n) for n in range(len(inst.node_gpus))) if o]
        best = min(cands, key=lambda o: (state.earliest_start(o, exclusive=True) + o.runtime, o.node))
        out.append(state.place(j, best, exclusive=True))
    return out


def current_practice(inst: Instance, rng: random.Random) -> list[Placement]:
    return _sequential(inst, inst.free_jobs)


def max_heuristic(inst: Instance, rng: random.Random) -> list[Placement]:
    def longest(j):
        return -min(o.runtime for o in (_whole_node_choice(inst, j, n) for n in range(len(inst.node_gpus))) if o)
    return _sequential(inst, sorted(inst.free_jobs, key=lambda j: (longest(j), j)))


def _best_at_most(inst: Instance, j: int, node: int, gpus: int) -> Optional[Option]:
    opts = [o for o in inst.all_options[j] if o.node == node and o.gpus <= gpus]
    return _fastest(opts) if opts else None


def _spread(inst: Instance, rng: random.Random) -> dict[int, list[int]]:
    """Per node, its jobs: each job to a random node that fits it, weighted by GPU count (the paper's
    multi-node baselines)."""
    out: dict[int, list[int]] = {n: [] for n in range(len(inst.node_gpus))}
    for j in inst.free_jobs:
        nodes = sorted({o.node for o in inst.all_options[j]})
        out[rng.choices(nodes, weights=[inst.node_gpus[n] for n in nodes])[0] if len(nodes) > 1 else nodes[0]].append(j)
    return out


def min_heuristic(inst: Instance, rng: random.Random) -> list[Placement]:
    choice: dict[int, Option] = {}
    for n, jobs in _spread(inst, rng).items():
        share = max(1, inst.node_gpus[n] // max(1, len(jobs)))
        for j in jobs:
            choice[j] = _best_at_most(inst, j, n, share) or min(
                (o for o in inst.all_options[j] if o.node == n), key=lambda o: (o.gpus, o.runtime))
    return list_schedule(inst, inst.free_jobs, choice)


def _runtime_at(inst: Instance, j: int, node: int, gpus: int) -> float:
    o = _best_at_most(inst, j, node, gpus)
    return o.runtime if o else float("inf")


def _optimus_alloc(inst: Instance, jobs: list[int], n: int) -> dict[int, int]:
    """Alg. 1 on one node for jobs that run together: fewest GPUs each, then +1 GPU to the biggest gain."""
    alloc = {j: min(o.gpus for o in inst.all_options[j] if o.node == n) for j in jobs}
    cap = inst.node_gpus[n]
    while sum(alloc.values()) < cap:
        gains = {j: _runtime_at(inst, j, n, alloc[j]) - _runtime_at(inst, j, n, alloc[j] + 1)
                 for j in jobs if alloc[j] < cap}
        if not gains or max(gains.values()) <= 0:
            break
        alloc[max(gains, key=lambda j: (gains[j], -j))] += 1
    return alloc


def optimus_greedy(inst: Instance, rng: random.Random) -> list[Placement]:
    """Per node, jobs in waves that fit side by side at their fewest GPUs; Alg. 1 apportions each wave's node."""
    choice: dict[int, Option] = {}
    for n, jobs in _spread(inst, rng).items():
        wave: list[int] = []
        used = 0
        for j in jobs + [None]:
            need = None if j is None else min(o.gpus for o in inst.all_options[j] if o.node == n)
            if j is None or (wave and used + need > inst.node_gpus[n]):
                for k, g in _optimus_alloc(inst, wave, n).items():
                    choice[k] = _best_at_most(inst, k, n, g)
                wave, used = [], 0
            if j is not None:
                wave.append(j)
                used += need
    return list_schedule(inst, inst.free_jobs, choice)


def random_baseline(inst: Instance, rng: random.Random) -> list[Placement]:
    order = list(inst.free_jobs)
    rng.shuffle(order)
    choice = {j: rng.choice(inst.all_options[j]) for j in order}
    return list_schedule(inst, order, choice)


RUNNERS: dict[str, Callable[[Instance, random.Random], list[Placement]]] = {
    "current-practice": current_practice,
    "max-heuristic": max_heuristic,
    "min-heuristic": min_heuristic,
    "optimus-greedy": optimus_greedy,
    "random": random_baseline,
}


def run_baseline(name: str, inst: Instance, seed: int = 0) -> list[Placement]:
    return RUNNERS[name](inst, random.Random(seed))
