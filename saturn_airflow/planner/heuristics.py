"""The constructive heuristic and local search that warm-start the MILP (milp.md section 2.7, "LS").

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

from .instance import Instance, Option
from .list_scheduler import GpuState, evaluate

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


def local_search(inst: Instance, start: Solution, rng: random.Random, deadline: float, max_moves: int = 100_000) -> Solution:
    """First-improvement random moves, accepting ties (plateau walks); stops at the deadline or move cap."""
    cur = Solution(list(start.order), dict(start.choice), start.score, start.source)
    n = len(cur.order)
    if n == 0:
        return cur
    multi = [j for j in cur.order if len(inst.options[j]) > 1]
    base_free = GpuState(inst).free
    for move in range(max_moves):
        if (move & 31) == 0 and time.monotonic() > deadline:
            break
        order, choice = cur.order, cur.choice
        kind = rng.random()
        if kind < 0.45 and multi:
            j = rng.choice(multi)
            old = choice[j]
            new = rng.choice(inst.options[j])
            if new == old:
                continue
            choice[j] = new
            score = evaluate(inst, order, choice, base_free)
            if score <= cur.score:
                cur.score = score
            else:
                choice[j] = old
        elif kind < 0.7 and n > 1:
            a, b = rng.randrange(n), rng.randrange(n)
            if a == b:
                continue
            order[a], order[b] = order[b], order[a]
            score = evaluate(inst, order, choice, base_free)
            if score <= cur.score:
                cur.score = score
            else:
                order[a], order[b] = order[b], order[a]
        elif n > 1:
            a, b = rng.randrange(n), rng.randrange(n)
            if a == b:
                continue
            j = order.pop(a)
            order.insert(b, j)
            score = evaluate(inst, order, choice, base_free)
            if score <= cur.score:
                cur.score = score
            else:
                order.pop(b)
                order.insert(a, j)
    cur.source = (start.source + "+ls").lstrip("+")
    return cur


def heuristic(inst: Instance, lower_bound: float, seed: int = 0, budget_s: float = 1.0,
              extra: Optional[list[Solution]] = None) -> Solution:
    """Best of the constructions (and `extra` starts), each of the best few improved by local search."""
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
        if left <= 0:
            break
        cand = local_search(inst, s, rng, time.monotonic() + left / (len(top) - i))
        if cand.score < best.score:
            best = cand
    return best
