"""Exact search for small instances: branch and bound over job orders and options, scored by the list scheduler.

Why searching list schedules is exact: take any valid schedule and place its jobs, in the order of
their start times, with the list scheduler (each job at the first moment enough of its node's GPUs
are free, on GPUs whose previous job has ended). By induction no job starts later than it did: for
every time t at or after the current job's start, at least as many GPUs are free by t in the list
schedule as in the given one (a placement removes the same g GPUs from both counts, and the list's
job ends no later). So some (order, option per job) list schedule is optimal, and a complete search
over those proves optimality. Pinned jobs enter as GPUs busy until their end, as everywhere else.

The search: depth-first, each step appends one unplaced job in one option, best finish first. It is
cut by (1) symmetry: jobs with the same options are interchangeable, so only the first unplaced job of
each such class is tried; (2) dominance: a state is its placed jobs (per class) and each node's sorted
GPU free times; one whose free times are all no earlier than another's with the same jobs placed
cannot end sooner (the same induction), so it is dropped; (3) bounds: current makespan, each
remaining job's earliest possible finish, and a GPU-time bound over the remaining jobs.
It stops at a node or time budget; a search cut short proves nothing and the caller carries on.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Optional

from saturn_airflow.planner.heuristics import Solution, scored
from saturn_airflow.planner.instance import Instance, Option
from saturn_airflow.planner.list_scheduler import EPS, GpuState

DEFAULT_NODE_BUDGET = 400_000


@dataclass
class ExactResult:
    solution: Optional[Solution]  # the best found, if it beats the incumbent given
    proven: bool  # the search finished: the best (this or the incumbent) is optimal within `tolerance`
    bound: float  # a lower bound on every plan's makespan (the optimum when proven with tolerance 0)
    nodes: int
    time_s: float


def _place(free: tuple[float, ...], g: int, d: float, not_before: float) -> tuple[tuple[float, ...], float, float]:
    """A node's sorted free times after placing a g-GPU job of duration d, starting when g GPUs are
    free and not before `not_before`, on the free GPUs that freed last (best fit, as GpuState.place).
    Returns (free times, start, end)."""
    s = free[g - 1]
    if s < not_before:
        s = not_before
    k = g
    n = len(free)
    while k < n and free[k] <= s + EPS:
        k += 1
    end = s + d
    rest = free[:k - g] + free[k:]
    i = 0
    while i < len(rest) and rest[i] <= end:
        i += 1
    return rest[:i] + (end,) * g + rest[i:], s, end


def _dominates(a: tuple, b: tuple) -> bool:
    """Each entry of `a` no later than the same entry of `b`: every node's sorted free times position by
    position, and the last start."""
    for x, y in zip(a, b):
        if x > y + EPS:
            return False
    return True


def solve_exact(inst: Instance, incumbent: Solution, *, tolerance: float = 0.0, time_limit: float = 1.0,
                node_budget: int = DEFAULT_NODE_BUDGET, lower_bound: float = 0.0) -> ExactResult:
    """Search (order, option) list schedules of the free jobs for one shorter than `incumbent`.

    With `tolerance` > 0 a branch is cut once it cannot beat the incumbent by more than that fraction,
    so a finished search proves the result within `tolerance` of optimal."""
    t0 = time.monotonic()
    deadline = t0 + time_limit
    jobs = list(inst.free_jobs)
    base = tuple(tuple(sorted(f)) for f in GpuState(inst).free)
    pin_top = max((f.end for f in inst.fixed.values()), default=0.0)
    sig_of: dict[tuple, int] = {}
    classes: list[list[int]] = []
    for j in jobs:
        sig = tuple(sorted((o.node, o.gpus, o.runtime) for o in inst.options[j]))
        if sig not in sig_of:
            sig_of[sig] = len(classes)
            classes.append([])
        classes[sig_of[sig]].append(j)
    opts = [sorted(inst.options[c[0]], key=lambda o: (o.runtime, o.gpus)) for c in classes]
    gpus_total = sum(len(f) for f in base)

    best_span = incumbent.makespan
    best: dict = {"order": None, "choice": None}
    shrink = 1.0 / (1.0 + max(0.0, tolerance))
    seen: dict[tuple, tuple[list[float], list[tuple]]] = {}  # placed per class -> states by entry sum
    counts = [0] * len(classes)
    order: list[int] = []
    choice: dict[int, Option] = {}
    stats = {"nodes": 0, "aborted": False}
    cut = [float("inf")]  # the least bound among cut branches: what a finished search proves

    def bound(state: tuple, last: float, span: float) -> float:
        """max(current makespan, each remaining job's earliest finish, the least C whose GPU time after
        every GPU's free time (and after `last`) holds the remaining jobs, each in an option finishing by C)."""
        lb = span
        events = []
        need = 0
        for c, os_ in enumerate(opts):
            left = len(classes[c]) - counts[c]
            if not left:
                continue
            need += 1
            fin_c = None
            for o in os_:
                st = state[o.node][o.gpus - 1]
                fin = (st if st > last else last) + o.runtime
                events.append((fin, left * o.gpus * o.runtime, c))
                if fin_c is None or fin < fin_c:
                    fin_c = fin
            if fin_c > lb:
                lb = fin_c
        if not need:
            return lb
        busy = sum(x if x > last else last for f in state for x in f)
        events.sort()
        have: dict[int, float] = {}
        area = 0.0
        i, n = 0, len(events)
        while i < n:
            t = events[i][0]
            while i < n and events[i][0] <= t:
                _, a, c = events[i]
                old = have.get(c)
                if old is None or a < old:
                    area += a - (old or 0.0)
                    have[c] = a
                i += 1
            if len(have) < need:
                continue
            nxt = events[i][0] if i < n else float("inf")
            cc = (busy + area) / gpus_total
            if cc < t:
                cc = t
            if cc < nxt:
                return cc if cc > lb else lb
        return lb

    def dfs(state: tuple, last: float, span: float, placed: int) -> None:
        nonlocal best_span
        stats["nodes"] += 1
        if (stats["nodes"] & 1023) == 0 and (time.monotonic() > deadline or stats["nodes"] > node_budget):
            stats["aborted"] = True
            return
        if placed == len(jobs):
            if span < best_span - EPS:
                best_span = span
                best["order"], best["choice"] = list(order), dict(choice)
            return
        me = (last,) + tuple(x for f in state for x in f)
        total = sum(me)
        sums, stored = seen.setdefault(tuple(counts), ([], []))
        # only a state with no larger entry sum can dominate this one
        for k in range(bisect.bisect_right(sums, total + EPS * len(me))):
            if _dominates(stored[k], me):
                return
        lb = bound(state, last, span)
        if lb >= best_span * shrink - EPS:
            if lb < cut[0]:
                cut[0] = lb
            return
        k = bisect.bisect_left(sums, total)
        sums.insert(k, total)
        stored.insert(k, me)
        moves = []
        for c, os_ in enumerate(opts):
            if counts[c] == len(classes[c]):
                continue
            for o in os_:
                nxt, st, end = _place(state[o.node], o.gpus, o.runtime, last)
                moves.append((end, o.gpus, st, c, o, nxt))
        moves.sort(key=lambda m: (m[0], m[1]))
        for end, _, st, c, o, nxt in moves:
            if end >= best_span * shrink - EPS:
                if end < cut[0]:
                    cut[0] = end
                continue
            j = classes[c][counts[c]]
            counts[c] += 1
            order.append(j)
            choice[j] = o
            child = tuple(tuple(x if x > st else st for x in f) for f in state[:o.node] + (nxt,) + state[o.node + 1:])
            dfs(child, st, end if end > span else span, placed + 1)
            order.pop()
            del choice[j]
            counts[c] -= 1
            if stats["aborted"]:
                return

    dfs(base, 0.0, pin_top, 0)
    proven = not stats["aborted"]
    sol = scored(inst, best["order"], best["choice"], "exact") if best["order"] is not None else None
    final = min(incumbent.makespan, sol.makespan if sol is not None else float("inf"))
    if proven:
        bnd = final if tolerance <= 0 else min(final, cut[0])
    else:
        bnd = lower_bound
    return ExactResult(sol, proven, max(bnd, lower_bound), stats["nodes"], time.monotonic() - t0)


__all__ = ["solve_exact", "ExactResult"]
