"""The constructive heuristic and local search that warm-start the MILP.

Multi-start earliest-finish greedy (each job takes the option minimising finish + lambda * its share
of the node's GPU-seconds, optionally capped to options no longer than a target makespan), then random
moves (change a job's option, swap two jobs, move a job) scored by the id-aware list scheduler.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from saturn_airflow.planner.instance import Instance, Option
from saturn_airflow.planner.list_scheduler import GpuState, evaluate, evaluate_node

LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CAP_FACTORS = (math.inf, 1.0, 1.05, 1.15, 1.3)


@dataclass
class Solution:
    order: list[int]
    choice: dict[int, Option]
    score: tuple[float, float]  # (makespan, sum of ends)
    source: str = ""

    @property
    def makespan(self) -> float:
        return self.score[0]


def scored(inst: Instance, order: Sequence[int], choice: dict[int, Option], source: str = "") -> Solution:
    return Solution(list(order), dict(choice), evaluate(inst, order, choice), source)


def min_runtime(inst: Instance, j: int) -> float:
    return min(o.runtime for o in inst.options[j])


def min_area(inst: Instance, j: int) -> float:
    return min(o.gpus * o.runtime for o in inst.options[j])


def eft_greedy(inst: Instance, order: Sequence[int], lam: float, cap: float = math.inf) -> Solution:
    """Place jobs in `order`, each on the option minimising finish + lam * g*T / node GPUs (T <= cap if any)."""
    state = GpuState(inst)
    choice: dict[int, Option] = {}
    for j in order:
        opts = [o for o in inst.options[j] if o.runtime <= cap] or inst.options[j]
        best = min(
            opts,
            key=lambda o: (state.earliest_start(o) + o.runtime + lam * o.gpus * o.runtime / inst.node_gpus[o.node], o.gpus),
        )
        state.place(j, best)
        choice[j] = best
    return scored(inst, order, choice, f"eft(lam={lam},cap={cap:.0f})")


def constructions(inst: Instance, lower_bound: float, deadline: float) -> list[Solution]:
    """Every multi-start construction that fits before `deadline` (at least one)."""
    jobs = inst.free_jobs
    orders = [
        sorted(jobs, key=lambda j: (-min_runtime(inst, j), j)),
        sorted(jobs, key=lambda j: (-min_area(inst, j), j)),
    ]
    out: list[Solution] = []
    for cap_f in CAP_FACTORS:
        for order in orders:
            for lam in LAMBDAS:
                out.append(eft_greedy(inst, order, lam, cap_f * lower_bound))
                if time.monotonic() > deadline:
                    return out
    return out


def _energy(score: tuple[float, float], n: int) -> float:
    """Makespan first; the mean end breaks ties so plateau moves that free GPUs earlier count."""
    return score[0] + 0.01 * score[1] / max(1, n)


def local_search(inst: Instance, start: Solution, rng: random.Random, deadline: float, max_moves: int = 10_000_000,
                 temperature: float = 0.02, target: float = 0.0) -> Solution:
    """Simulated annealing over random moves (change a job's option, swap two jobs, move a job), scored by
    the list scheduler; the temperature (a fraction of the makespan) cools geometrically to zero by the
    deadline. Stops early once a makespan of `target` or less is found (nothing left to gain).
    Returns the best solution seen, so never worse than `start`."""
    cur = Solution(list(start.order), dict(start.choice), start.score, start.source)
    best = Solution(list(cur.order), dict(cur.choice), cur.score, cur.source)
    n = len(cur.order)
    if (n < 2 and not any(len(inst.options[j]) > 1 for j in cur.order)) or best.makespan <= target:
        return best
    multi = [j for j in cur.order if len(inst.options[j]) > 1]
    base_free = GpuState(inst).free
    nodes = range(len(base_free))
    per_node = [evaluate_node(cur.order, cur.choice, k, base_free) for k in nodes]
    cur.score = _combined(per_node)
    t_start = time.monotonic()
    span = max(1e-9, deadline - t_start)
    t0 = temperature * start.makespan
    temp = t0
    e_cur = _energy(cur.score, n)
    for move in range(max_moves):
        if (move & 63) == 0:
            now = time.monotonic()
            if now > deadline:
                break
            frac = (now - t_start) / span
            temp = t0 * (1 - frac) ** 3
        order, choice = cur.order, cur.choice
        kind = rng.random()
        if kind < 0.45 and multi:
            j = rng.choice(multi)
            old = choice[j]
            new = rng.choice(inst.options[j])
            if new == old:
                continue
            choice[j] = new
            touched = {old.node, new.node}
            undo = lambda: choice.__setitem__(j, old)  # noqa: E731
        elif kind < 0.55 and len(nodes) > 1 and n > 1:
            # exchange nodes: two jobs trade places across nodes, each at its GPU count on the other's
            # node if it has one (a single option move cannot do this without first unbalancing a node)
            ja, jb = order[rng.randrange(n)], order[rng.randrange(n)]
            oa, ob = choice[ja], choice[jb]
            if oa.node == ob.node:
                continue
            na, nb = _on_node(inst, ja, ob.node, oa.gpus, rng), _on_node(inst, jb, oa.node, ob.gpus, rng)
            if na is None or nb is None:
                continue
            choice[ja], choice[jb] = na, nb
            touched = {oa.node, ob.node}
            undo = lambda: (choice.__setitem__(ja, oa), choice.__setitem__(jb, ob))  # noqa: E731
        elif kind < 0.75 and n > 1:
            a, b = rng.randrange(n), rng.randrange(n)
            if a == b:
                continue
            order[a], order[b] = order[b], order[a]
            touched = {choice[order[a]].node, choice[order[b]].node}
            undo = lambda: order.__setitem__(slice(None), _swapped(order, a, b))  # noqa: E731
        elif n > 1:
            a, b = rng.randrange(n), rng.randrange(n)
            if a == b:
                continue
            job = order.pop(a)
            order.insert(b, job)
            touched = {choice[job].node}
            undo = lambda: (order.pop(b), order.insert(a, job))  # noqa: E731
        else:
            continue
        saved = {k: per_node[k] for k in touched}
        for k in touched:
            per_node[k] = evaluate_node(order, choice, k, base_free)
        score = _combined(per_node)
        e_new = _energy(score, n)
        if e_new <= e_cur or (temp > 0 and rng.random() < math.exp(-(e_new - e_cur) / temp)):
            cur.score, e_cur = score, e_new
            if score < best.score:
                best = Solution(list(order), dict(choice), score, best.source)
                if score[0] <= target:
                    break
        else:
            undo()
            for k, v in saved.items():
                per_node[k] = v
    best.source = (start.source + "+ls").lstrip("+")
    best.score = evaluate(inst, best.order, best.choice)  # the one scorer, so scores compare exactly elsewhere
    return best


def _combined(per_node: list[tuple[float, float]]) -> tuple[float, float]:
    """The whole schedule's (makespan, sum of ends) from each node's."""
    return max(m for m, _ in per_node), sum(t for _, t in per_node)


def _on_node(inst: Instance, j: int, node: int, gpus: int, rng: random.Random) -> Optional[Option]:
    """Job j's option on `node` with `gpus` GPUs if it has one, else a random one there (None: none there)."""
    here = [o for o in inst.options[j] if o.node == node]
    same = [o for o in here if o.gpus == gpus]
    return same[0] if same else (rng.choice(here) if here else None)


def _swapped(order: list[int], a: int, b: int) -> list[int]:
    out = list(order)
    out[a], out[b] = out[b], out[a]
    return out


def heuristic(inst: Instance, lower_bound: float, seed: int = 0, budget_s: float = 1.0,
              extra: Optional[list[Solution]] = None, target: float = 0.0) -> Solution:
    """Best of the constructions (and `extra` starts), each of the best few improved by local search,
    stopping as soon as one reaches `target` (e.g. the lower bound plus the tolerated gap)."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    starts = constructions(inst, lower_bound, t0 + 0.35 * budget_s) + list(extra or [])
    starts.sort(key=lambda s: s.score)
    seen, distinct = set(), []
    for s in starts:
        key = (round(s.makespan, 6), tuple(s.order))
        if key not in seen:
            seen.add(key)
            distinct.append(s)
    top = distinct[:3]
    best = top[0]
    for i, s in enumerate(top):
        left = t0 + budget_s - time.monotonic()
        if left <= 0 or best.makespan <= target:
            break
        cand = local_search(inst, s, rng, time.monotonic() + left / (len(top) - i), target=target)
        if cand.score < best.score:
            best = cand
    return best
