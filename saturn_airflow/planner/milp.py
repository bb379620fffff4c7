"""The time-indexed SPASE MILP in Pyomo (the best formulation we measured: docs/benchmarks-planner.md), in step form.

S[j,o,t] = 1 when job j has started in option o (a config on a node) by slot t; it is monotone in t,
so the job runs in slot tau when S[tau] - S[tau-d] = 1. This is the classic pulse model (z = S[t] -
S[t-1]) after a unimodular change of variables: the same LP bound, but each capacity row holds two
entries per option instead of d, so Pyomo builds it and HiGHS presolves it many times faster.
Per node and slot the running jobs' GPUs fit the node; GPU ids are recovered afterwards by list
scheduling (any cumulative-feasible schedule has concrete ids). Runtimes are rounded to
slots of U/N (U the warm start's makespan); the real plan always comes from `extract`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from saturn_airflow.planner.heuristics import Solution, scored
from saturn_airflow.planner.instance import Instance, Option
from saturn_airflow.planner.list_scheduler import list_schedule, makespan

DEFAULT_SLOTS = 100
MIN_SLOTS = 40
MAX_SLOTS = 200
MAX_BINARIES = 20_000
BINARIES_PER_SECOND = 1_000  # what a Pyomo build + HiGHS solve can use per second of budget (2 busy cores)


@dataclass
class TimeIndexed:
    model: object
    jobs: list[int]
    options: dict[int, list[Option]]
    dur: dict[tuple[int, int], int]
    last: dict[tuple[int, int], int]  # latest start slot per (job, option index); options with none are absent
    delta: float
    horizon: int


def slot_count(inst: Instance, jobs: Sequence[int], nodes: Optional[set[int]] = None, budget_s: float = 30.0) -> int:
    """N: finer for small models (rounding error per job is up to half a slot), capped so the model builds
    and solves within the budget; below MIN_SLOTS the model is not worth building (returns 0)."""
    n_opts = sum(len([o for o in inst.options[j] if nodes is None or o.node in nodes]) for j in jobs)
    cap = min(MAX_BINARIES, BINARIES_PER_SECOND * budget_s)
    n = min(MAX_SLOTS, int(cap // max(1, n_opts)))
    return n if n >= MIN_SLOTS else 0


def _round(x: float) -> int:
    return max(1, int(math.floor(x + 0.5)))


def build_time_indexed(inst: Instance, warm: Solution, jobs: Sequence[int], nodes: Optional[set[int]] = None,
                       slots: int = DEFAULT_SLOTS) -> TimeIndexed:
    """The model over `jobs` restricted to `nodes` (all if None), warm-started from `warm` in slot time.

    Runtimes round to the nearest slot (unbiased; the real schedule is re-derived anyway), and the
    horizon is the warm start list-scheduled with those slot runtimes, so the warm start is a point
    of the model and the model is never infeasible.
    """
    import pyomo.environ as pyo

    jobs = list(jobs)
    opts = {j: [o for o in inst.options[j] if nodes is None or o.node in nodes] for j in jobs}
    node_set = sorted({o.node for j in jobs for o in opts[j]})
    pins = [f for f in inst.fixed.values() if f.option.node in node_set]
    warm_order = [j for j in warm.order if j in opts]
    u = max(makespan(list_schedule(inst, warm_order, warm.choice)), 1e-9)
    delta = u / slots
    dur = {(j, k): _round(o.runtime / delta) for j in jobs for k, o in enumerate(opts[j])}
    pin_slots = {f.job: math.ceil(f.end / delta - 1e-9) for f in inst.fixed.values()}

    durations = {j: dur[(j, opts[j].index(warm.choice[j]))] for j in warm_order}
    rounded = list_schedule(inst, warm_order, warm.choice, durations=durations, pinned_end=lambda f: pin_slots[f.job])
    horizon = int(round(max([p.end for p in rounded if p.job in opts] + [pin_slots[f.job] for f in pins] + [1])))
    warm_start = {p.job: (opts[p.job].index(p.option), int(round(p.start))) for p in rounded if p.job in opts}

    last = {(j, k): horizon - dur[(j, k)] for j in jobs for k in range(len(opts[j])) if horizon - dur[(j, k)] >= 0}
    ks = {j: [k for k in range(len(opts[j])) if (j, k) in last] for j in jobs}
    index = [(j, k, t) for (j, k), lt in last.items() for t in range(lt + 1)]
    m = pyo.ConcreteModel()
    m.X = pyo.Set(initialize=index, dimen=3, ordered=True)
    m.S = pyo.Var(m.X, within=pyo.Binary, initialize=0)
    m.C = pyo.Var(bounds=(0, horizon), initialize=horizon)
    mono = [(j, k, t) for (j, k, t) in index if t > 0]
    m.M = pyo.Set(initialize=mono, dimen=3, ordered=True)
    m.mono = pyo.Constraint(m.M, rule=lambda m, j, k, t: m.S[j, k, t] >= m.S[j, k, t - 1])
    m.one = pyo.Constraint(jobs, rule=lambda m, j: sum(m.S[j, k, last[(j, k)]] for k in ks[j]) == 1)

    def end_expr(j):  # sum_t (t + d) z_t with z_t = S_t - S_{t-1}, summed by parts
        return sum((last[(j, k)] + dur[(j, k)]) * m.S[j, k, last[(j, k)]]
                   - sum(m.S[j, k, t] for t in range(last[(j, k)])) for k in ks[j])

    m.end = pyo.Constraint(jobs, rule=lambda m, j: m.C >= end_expr(j))
    cap = {n: [inst.node_gpus[n]] * horizon for n in node_set}
    for f in pins:  # list scheduling treats a pinned job's GPUs as busy from 0, so the model does too
        for tau in range(min(horizon, pin_slots[f.job])):
            cap[f.option.node][tau] -= f.option.gpus
    rows = []
    for n in node_set:
        for tau in range(horizon):
            terms = []
            demand = 0
            for j in jobs:
                for k in ks[j]:
                    o, d, lt = opts[j][k], dur[(j, k)], last[(j, k)]
                    if o.node != n or tau - d + 1 > lt:
                        continue
                    terms.append((o.gpus, (j, k, min(tau, lt)), (j, k, tau - d) if tau - d >= 0 else None))
                    demand += o.gpus
            if demand > cap[n][tau]:
                rows.append((n, tau, terms))
    m.R = pyo.RangeSet(0, len(rows) - 1) if rows else pyo.Set(initialize=[])
    m.cap = pyo.Constraint(m.R, rule=lambda m, r: sum(
        g * (m.S[hi] - (m.S[lo] if lo else 0)) for g, hi, lo in rows[r][2]) <= cap[rows[r][0]][rows[r][1]])
    total = sum(inst.node_gpus[n] for n in node_set)
    pin_area = sum(f.option.gpus * pin_slots[f.job] for f in pins)
    m.energy = pyo.Constraint(expr=total * m.C >= pin_area + sum(
        opts[j][k].gpus * dur[(j, k)] * m.S[j, k, last[(j, k)]] for j in jobs for k in ks[j]))
    if pins:
        m.pinned = pyo.Constraint(expr=m.C >= max(pin_slots[f.job] for f in pins))
    m.obj = pyo.Objective(expr=m.C, sense=pyo.minimize)
    for j, (k0, t0) in warm_start.items():
        for k in ks[j]:
            for t in range(last[(j, k)] + 1):
                m.S[j, k, t].value = 1 if (k == k0 and t >= t0) else 0
    m.C.value = horizon
    return TimeIndexed(m, jobs, opts, dur, last, delta, horizon)


def extract(inst: Instance, ti: TimeIndexed, base: Solution) -> Optional[Solution]:
    """The solver's options and start order, list-scheduled with real runtimes; None unless the point is
    integral with one option per job (solvers can hand back fractional or partial points)."""
    m = ti.model
    starts: dict[int, tuple[int, int]] = {}
    for j in ti.jobs:
        chosen = []
        for k in range(len(ti.options[j])):
            if (j, k) not in ti.last:
                continue
            vals = [m.S[j, k, t].value for t in range(ti.last[(j, k)] + 1)]
            if any(v is None or 1e-5 < v < 1 - 1e-5 for v in vals):
                return None
            if vals[-1] > 0.5:
                chosen.append((k, next(t for t, v in enumerate(vals) if v > 0.5)))
        if len(chosen) != 1:
            return None
        starts[j] = chosen[0]
    choice = dict(base.choice)
    for j, (k, _) in starts.items():
        choice[j] = ti.options[j][k]
    sub_order = iter(sorted(ti.jobs, key=lambda j: (starts[j][1], -ti.dur[(j, starts[j][0])], j)))
    inside = set(ti.jobs)
    order = [next(sub_order) if j in inside else j for j in base.order]
    return scored(inst, order, choice, "milp")
