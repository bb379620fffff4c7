"""The time-indexed SPASE MILP in Pyomo (milp.md section 2.6: the measured best formulation).

z[j,o,t] = 1 when job j runs in option o (config on node) from slot t. Per node and slot, the GPUs of
the jobs running then fit the node (cumulative; GPU ids are recovered afterwards by list scheduling,
which never lengthens the plan). Durations are rounded up to slots of U/N, U the warm start's makespan,
so the warm start rounded up is feasible and the model's value over-estimates the real makespan; the
real plan comes from `extract`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from .heuristics import Solution
from .instance import Instance, Option
from .list_scheduler import list_schedule, makespan

DEFAULT_SLOTS = 100
MAX_BINARIES = 60_000


@dataclass
class TimeIndexed:
    model: object
    jobs: list[int]
    options: dict[int, list[Option]]
    dur: dict[tuple[int, int], int]
    delta: float
    horizon: int
    warm_slots: int


def slot_count(inst: Instance, jobs: Sequence[int], nodes: Optional[set[int]], slots: int = DEFAULT_SLOTS) -> int:
    """N, reduced so the model stays under MAX_BINARIES (roughly jobs x options x N)."""
    n_opts = sum(len([o for o in inst.options[j] if nodes is None or o.node in nodes]) for j in jobs)
    return max(20, min(slots, MAX_BINARIES // max(1, n_opts)))


def build_time_indexed(inst: Instance, warm: Solution, jobs: Sequence[int], nodes: Optional[set[int]] = None,
                       slots: int = DEFAULT_SLOTS) -> TimeIndexed:
    """The model over `jobs` restricted to `nodes` (all if None), warm-started from `warm` rounded up to slots."""
    import pyomo.environ as pyo

    jobs = list(jobs)
    opts = {j: [o for o in inst.options[j] if nodes is None or o.node in nodes] for j in jobs}
    node_set = sorted({o.node for j in jobs for o in opts[j]})
    pins = [f for f in inst.fixed.values() if f.option.node in node_set]
    warm_order = [j for j in warm.order if j in opts]
    u = max([warm.choice[j].runtime for j in warm_order] + [f.end for f in pins] + [1e-9])
    real = makespan(list_schedule(inst, warm_order, warm.choice))
    u = max(u, real)
    delta = u / slots
    dur = {(j, k): max(1, math.ceil(o.runtime / delta - 1e-9)) for j in jobs for k, o in enumerate(opts[j])}
    pin_slots = {f.job: math.ceil(f.end / delta - 1e-9) for f in pins}

    # The warm start with slot durations: integer starts, so it is a point of the model.
    durations = {j: dur[(j, opts[j].index(warm.choice[j]))] for j in warm_order}
    rounded = list_schedule(inst, warm_order, warm.choice, durations=durations, pinned_end=lambda f: pin_slots.get(f.job, 0))
    horizon = int(round(max([p.end for p in rounded if p.job in opts] + list(pin_slots.values()) + [1])))
    warm_start = {p.job: (opts[p.job].index(p.option), int(round(p.start))) for p in rounded if p.job in opts}

    index = [(j, k, t) for j in jobs for k in range(len(opts[j])) for t in range(horizon - dur[(j, k)] + 1)]
    m = pyo.ConcreteModel()
    m.X = pyo.Set(initialize=index, dimen=3, ordered=True)
    m.z = pyo.Var(m.X, within=pyo.Binary, initialize=0)
    m.C = pyo.Var(bounds=(0, horizon), initialize=horizon)
    by_job: dict[int, list] = {j: [] for j in jobs}
    for (j, k, t) in index:
        by_job[j].append((k, t))
    m.one = pyo.Constraint(jobs, rule=lambda m, j: sum(m.z[j, k, t] for k, t in by_job[j]) == 1)
    m.end = pyo.Constraint(jobs, rule=lambda m, j: m.C >= sum((t + dur[(j, k)]) * m.z[j, k, t] for k, t in by_job[j]))
    cap = {n: [inst.node_gpus[n]] * horizon for n in node_set}
    for f in pins:
        for tau in range(min(horizon, pin_slots[f.job])):
            cap[f.option.node][tau] -= f.option.gpus
    terms: dict[tuple[int, int], list] = {}
    for (j, k, t) in index:
        o = opts[j][k]
        for tau in range(t, t + dur[(j, k)]):
            terms.setdefault((o.node, tau), []).append((o.gpus, (j, k, t)))
    rows = [key for key, ts in terms.items() if sum(g for g, _ in ts) > cap[key[0]][key[1]]]
    m.R = pyo.Set(initialize=rows, dimen=2, ordered=True)
    m.cap = pyo.Constraint(m.R, rule=lambda m, n, tau: sum(g * m.z[v] for g, v in terms[(n, tau)]) <= cap[n][tau])
    total = sum(inst.node_gpus[n] for n in node_set)
    pin_area = sum(f.option.gpus * pin_slots[f.job] for f in pins)
    m.energy = pyo.Constraint(expr=total * m.C >= pin_area + sum(opts[j][k].gpus * dur[(j, k)] * m.z[j, k, t] for (j, k, t) in index))
    if pin_slots:
        m.pinned = pyo.Constraint(expr=m.C >= max(pin_slots.values()))
    # A tiny pull towards early ends keeps extraction tight without changing the optimal makespan.
    eps = 1.0 / (len(jobs) * (horizon + 1) + 1)
    m.obj = pyo.Objective(expr=m.C + eps * sum((t + dur[(j, k)]) * m.z[j, k, t] for (j, k, t) in index), sense=pyo.minimize)
    for j, (k, t) in warm_start.items():
        m.z[j, k, t].value = 1
    m.C.value = horizon
    return TimeIndexed(m, jobs, opts, dur, delta, horizon, horizon)


def extract(inst: Instance, ti: TimeIndexed, base: Solution) -> Optional[Solution]:
    """The solver's options and start order, list-scheduled with real runtimes; None if the point is not integral."""
    from .heuristics import scored

    starts: dict[int, tuple[int, int]] = {}
    m = ti.model
    for (j, k, t) in m.X:
        v = m.z[j, k, t].value
        if v is None:
            continue
        if 1e-5 < v < 1 - 1e-5:
            return None
        if v > 0.5:
            if j in starts:
                return None
            starts[j] = (k, t)
    if set(starts) != set(ti.jobs):
        return None
    choice = dict(base.choice)
    for j, (k, _) in starts.items():
        choice[j] = ti.options[j][k]
    sub_order = sorted(ti.jobs, key=lambda j: (starts[j][1], -ti.dur[(j, starts[j][0])], j))
    # jobs outside the model keep their place; the model's jobs take the model's order among themselves
    slots = iter(sub_order)
    inside = set(ti.jobs)
    order = [next(slots) if j in inside else j for j in base.order]
    return scored(inst, order, choice, "milp")
