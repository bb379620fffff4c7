"""Successive halving over a group of jobs: who stops at a rung, who goes on, who waits. Pure functions.

The quota of a group of n jobs is fixed up front, as synchronous successive halving keeps it:
K_0 = n and K_r = max(1, ceil(K_(r-1) * keep)) jobs go past rung r. Decisions are asynchronous:
a job that has reached rung r (it has a value there) is

  stopped   once K_r jobs of its group reached r with a better value: it can no longer be among the
            best K_r, whatever the others still do;
  promoted  once fewer than K_r jobs could still beat it (those better at r, plus the jobs of its
            group still alive that have not reached r yet): it is among the best K_r for sure;
  waiting   otherwise (paused at its checkpoint; its devices serve other jobs meanwhile).

So the jobs that run to the end are exactly the ones synchronous successive halving keeps, in every
order of arrival, and nothing ever waits for a whole rung to finish while other work is runnable.
Ties (and NaN, which ranks last) are broken by job name, so timing never changes an outcome.

`ray_asha_continues` is Ray Tune's asynchronous rule (ASHAScheduler), kept for the benchmark's
baseline: a job arriving at a rung goes on when its value is within the best `keep` share of the
values recorded there before it; the first to arrive always goes on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional

STOP, PROMOTE, WAIT, RUN = "stop", "promote", "wait", "run"


def quotas(n: int, keep: float, n_rungs: int) -> list[int]:
    """K_1..K_R: how many jobs of a group of n go past each rung."""
    out, k = [], n
    for _ in range(n_rungs):
        k = max(1, math.ceil(k * keep - 1e-9))
        out.append(k)
    return out


def _key(value: Optional[float], goal: str) -> float:
    """Smaller is better; NaN and missing rank last."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return math.inf
    return float(value) if goal == "min" else -float(value)


@dataclasses.dataclass(frozen=True)
class Verdict:
    job: str
    action: str  # run (no rung reached yet, or promoted and on its way) | wait | promote | stop
    rung: Optional[int] = None  # the rung step the action is about (the job's latest rung reached)
    rank: Optional[int] = None  # 1 = best among the jobs that reached that rung so far
    arrived: int = 0  # jobs of the group at that rung so far
    quota: int = 0  # K_r
    value: Optional[float] = None

    def describe(self) -> str:
        if self.rung is None:
            return f"{self.job}: no rung reached yet"
        where = f"rung {self.rung}: rank {self.rank} of {self.arrived} arrived, {self.quota} go on"
        return {STOP: f"stopped at {where}", PROMOTE: f"promoted at {where}", WAIT: f"waits at {where}",
                RUN: f"past {where}"}[self.action]


def decide(members: Iterable[str], rungs: list[int], keep: float, goal: str,
           values: Mapping[str, Mapping[int, float]], gone: Iterable[str] = ()) -> dict[str, Verdict]:
    """The verdict of every job of one group from the values recorded at rungs.

    `values`: job -> {rung step: metric value}; `gone`: jobs that can no longer arrive anywhere (failed
    for good); they count for the quotas but never as competitors. A job's verdict is about its
    latest rung with a value: `promote` means it may run on to its next rung (or to the end), `wait`
    that its fate depends on jobs still to arrive, `stop` that it lost.
    """
    members = list(members)
    ks = quotas(len(members), keep, len(rungs))
    alive = [m for m in members if m not in set(gone)]
    out: dict[str, Verdict] = {m: Verdict(m, RUN) for m in members}
    for r, k in zip(rungs, ks):
        at = [m for m in alive if r in (values.get(m) or {})]
        if not at:
            break
        pending = len(alive) - len(at)  # alive, not at r yet: each could still beat anyone here
        ranked = sorted(at, key=lambda m: (_key(values[m][r], goal), m))
        lost = set()
        for pos, m in enumerate(ranked):
            if pos >= k:
                action = STOP
                lost.add(m)
            elif pos + pending < k:
                action = PROMOTE
            else:
                action = WAIT
            out[m] = Verdict(m, action, r, pos + 1, len(at), k, values[m][r])
        alive = [m for m in alive if m not in lost]
    return out


def decide_all(groups: Mapping[str, list[str]], rungs: list[int], keep: float, goal: str,
               values: Mapping[str, Mapping[int, float]], gone: Iterable[str] = ()) -> dict[str, Verdict]:
    """`decide` for every group; jobs in no group are absent from the result."""
    gone = set(gone)
    out: dict[str, Verdict] = {}
    for members in groups.values():
        out.update(decide(members, rungs, keep, goal, values, gone & set(members)))
    return out


def synchronous_survivors(members: list[str], rungs: list[int], keep: float, goal: str,
                          values: Mapping[str, Mapping[int, float]]) -> list[str]:
    """What synchronous successive halving keeps to the end (every job evaluated at every rung it reaches)."""
    alive = list(members)
    for r, k in zip(rungs, quotas(len(members), keep, len(rungs))):
        alive = sorted(alive, key=lambda m: (_key(values[m][r], goal), m))[:k]
    return sorted(alive)


def best(jobs: Iterable[str], finals: Mapping[str, Optional[float]], goal: str) -> Optional[str]:
    """The job with the best final value (ties by name); None when no job has one."""
    have = [j for j in jobs if finals.get(j) is not None]
    if not have:
        return None
    return min(have, key=lambda j: (_key(finals[j], goal), j))


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def ray_asha_continues(value: Optional[float], earlier: list[Optional[float]], keep: float, goal: str) -> bool:
    """Ray Tune's ASHA rule at one rung: go on unless worse than the (1 - keep) quantile of the values
    recorded there earlier (Ray compares rewards, higher is better; NaN here counts as the worst)."""
    seen = [-_key(v, goal) for v in earlier]
    seen = [s for s in seen if not math.isinf(s)]
    if not earlier:
        return True
    mine = -_key(value, goal)
    if not seen:
        return not math.isinf(mine)
    return mine >= percentile(seen, (1.0 - keep) * 100.0)


__all__ = ["decide", "decide_all", "quotas", "Verdict", "synchronous_survivors", "best", "ray_asha_continues",
           "STOP", "PROMOTE", "WAIT", "RUN"]
