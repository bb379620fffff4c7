"""The one rate estimate: how fast a running job trains now, from its progress record alone.

Every reader (drift watch, re-plan, Gantt page, `saturn show`) calls `estimate`, so they all see
the same number. Why these rules:

- Start-up never counts: the trail starts at the launch's first step (process launch, model build
  and checkpoint load are over by then).
- Warm-up never counts: the first steps of a launch run slower (lazy initialisation, allocator
  growth, caches, a co-scheduled launch competing for the same cores). The steady phase starts once
  the launch has done `warmup_steps` steps AND `warmup_s` seconds have passed since its first step;
  `warmup_s` is the larger of the profiled warm-up of the config and the `drift_warmup_s` floor (a
  real run warms up slower than the profiler's quiet trial did).
- A minimum window: a rate is reported only over at least `window_s` seconds AND `window_steps`
  steps of the steady phase (a job slower than that: 3 x `window_s` and 2 steps); the window is the
  most recent such stretch, so a slowdown shows within about one window.
- Until then the estimate is None ("warming up"): readers fall back to the plan, never to the
  start-up-polluted average. Records from older writers (no trail) fall back to their recent rate,
  then their average rate.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from saturn_airflow.spec.progress import ProgressRecord

DEFAULT_WARMUP_STEPS = 3  # the profiler's own warm-up count (profiling.profiler.DEFAULT_WARMUP)


@dataclasses.dataclass(frozen=True)
class RateWindow:
    """How a rate is measured (from the [saturn] drift_* settings)."""

    warmup_s: float = 10.0
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    window_s: float = 5.0
    window_steps: int = 10

    @classmethod
    def from_settings(cls) -> "RateWindow":
        from saturn_airflow import settings

        return cls(warmup_s=settings.drift_warmup_s(), warmup_steps=DEFAULT_WARMUP_STEPS,
                   window_s=settings.drift_window_s(), window_steps=settings.drift_window_steps())

    def with_profile(self, warmup_s: Optional[float]) -> "RateWindow":
        """This window, with the profiled warm-up of the job's config when that is longer."""
        if warmup_s and warmup_s > self.warmup_s:
            return dataclasses.replace(self, warmup_s=float(warmup_s))
        return self


@dataclasses.dataclass(frozen=True)
class RateEstimate:
    rate: Optional[float]  # steps/s over [since, until], None while warming up or not running
    since: Optional[float] = None  # epoch s
    until: Optional[float] = None
    steps: int = 0
    why: str = ""

    @property
    def known(self) -> bool:
        return self.rate is not None and self.rate > 0


def _samples(rec: ProgressRecord) -> list[tuple[float, int]]:
    out = [s for s in rec.trail]
    if rec.updated_at is not None and (not out or rec.updated_at > out[-1][0]):
        out.append((float(rec.updated_at), int(rec.step)))
    return out


def estimate(rec: Optional[ProgressRecord], window: RateWindow = RateWindow()) -> RateEstimate:
    """The steady rate of the launch that wrote `rec` (see the module docstring); for a record of a
    launch that ended (preempted, interrupted, done), the rate it last ran at."""
    if rec is None or rec.leased_only:
        return RateEstimate(None, why="no runner record yet")
    if rec.first_step_at is None or not rec.trail:  # a record without a trail (older writer)
        legacy = rec.recent_rate_steps_per_s or rec.rate_steps_per_s
        if legacy and legacy > 0:
            return RateEstimate(float(legacy), why="record's own rate (no trail)")
        return RateEstimate(None, why="no rate reported yet")
    samples = _samples(rec)
    boundary_t = rec.first_step_at + window.warmup_s
    reached = next((t for t, s in samples if s >= rec.start_step + window.warmup_steps), None)
    if reached is None:
        return RateEstimate(None, why=f"warming up (fewer than {window.warmup_steps} steps)")
    boundary_t = max(boundary_t, reached)
    steady = [(t, s) for t, s in samples if t >= boundary_t]
    if len(steady) < 2:
        return RateEstimate(None, why=f"warming up (first {window.warmup_s:.0f} s)")
    t1, s1 = steady[-1]
    start = None
    for t, s in reversed(steady[:-1]):
        if t1 - t >= window.window_s and (s1 - s >= window.window_steps or (t1 - t >= 3 * window.window_s and s1 - s >= 2)):
            start = (t, s)
            break
    if start is None:
        return RateEstimate(None, why=f"steady window shorter than {window.window_s:.0f} s / {window.window_steps} steps")
    t0, s0 = start
    return RateEstimate((s1 - s0) / (t1 - t0), since=t0, until=t1, steps=s1 - s0, why="steady window")


def estimates(records: dict[str, ProgressRecord], window: RateWindow = RateWindow(),
              warmups: Optional[dict[str, float]] = None) -> dict[str, RateEstimate]:
    """`estimate` for every job; `warmups`: job -> profiled warm-up seconds of its config."""
    warmups = warmups or {}
    return {job: estimate(rec, window.with_profile(warmups.get(job))) for job, rec in records.items()}
