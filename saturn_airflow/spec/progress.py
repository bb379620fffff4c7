"""The progress record (a contract): what a training job reports while it runs, and its state.

One record per (workload, sweep, job) in the ProgressStore (`progress/<workload>/<sweep>/<job>.json`),
replaced whole on every write. The runner's rank 0 writes it every few seconds; the launcher and the training
operator write it when a run ends without the runner saying so. The drift watch, the re-plan, the
Gantt page and `saturn show` read it. Unknown keys are kept (readers ignore them), so older and newer
writers share one store.

States (`JobState`):
  pending      no attempt yet under any plan (there is no record at all)
  running      a runner is training it (or its task holds the job lease and is starting)
  done         finished, under whichever plan; never trained again within the sweep
  preempted    stopped with a checkpoint because a newer plan moved it; the newer plan resumes it
  interrupted  an attempt ended without finishing (a rank died, a signal, an error); an Airflow
               retry of the task resumes it from its checkpoint
  failed       failed for good: the task's last attempt ended without finishing; clearing the task
               in Airflow resumes it from its checkpoint

`trail` holds recent (epoch second, step) samples of the current launch, about half a second
apart, covering the last `TRAIL_S` seconds; `first_step_at` is when that launch's first step began
(after start-up: process launch, model build, checkpoint load). Rates are computed from them by one
function, `saturn_airflow.control.rates.estimate`, for every reader.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

TRAIL_S = 60.0  # how much history a record's trail keeps
TRAIL_EVERY_S = 0.5  # spacing of trail samples
TRAIL_MAX = 160


class JobState(str, enum.Enum):
    """A job's state in the ProgressStore; compares equal to its string value."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    PREEMPTED = "preempted"
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class ProgressRecord(BaseModel):
    """One job's latest progress. Every field is optional on disk; `parse` never raises."""

    model_config = ConfigDict(extra="allow")

    job: Optional[str] = None
    workload: Optional[str] = None
    plan_id: Optional[str] = None
    state: JobState = JobState.PENDING
    step: int = 0
    total: int = 0
    start_step: int = 0  # where the current launch started (its resume point)
    rate_steps_per_s: Optional[float] = None  # average since the launch's first step (display only)
    recent_rate_steps_per_s: Optional[float] = None  # since the previous record (display only)
    started_at: Optional[float] = None  # epoch s: the launch (or, leased_only, the task) started
    first_step_at: Optional[float] = None  # epoch s: the launch's first step began
    updated_at: Optional[float] = None
    finished_at: Optional[float] = None
    trail: list[tuple[float, int]] = []
    parallelism: Optional[str] = None
    device_ids: list[int] = []
    node: Optional[str] = None
    loss: Optional[float] = None
    error: Optional[str] = None
    pid: Optional[int] = None  # rank 0's process
    launcher_pid: Optional[int] = None  # torchrun's process (the ranks' parent)
    leased_only: bool = False  # no runner record yet: the task holds the job lease and is starting

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, v: Any) -> Any:
        if v is None:
            return JobState.PENDING
        try:
            return JobState(str(v))
        except ValueError:
            return JobState.PENDING  # a state from a newer writer: treat as "will run"

    @field_validator("trail", mode="before")
    @classmethod
    def _trail(cls, v: Any) -> Any:
        out = []
        for s in v or []:
            try:
                out.append((float(s[0]), int(s[1])))
            except (TypeError, ValueError, IndexError):
                continue
        return out

    @classmethod
    def parse(cls, data: Optional[dict]) -> Optional["ProgressRecord"]:
        """A record from its JSON dict; None for no record or one too broken to read."""
        if not data or not isinstance(data, dict):
            return None
        clean = {k: v for k, v in data.items() if v is not None}
        for key in ("step", "total", "start_step"):
            if key in clean:
                try:
                    clean[key] = int(clean[key])
                except (TypeError, ValueError):
                    clean.pop(key)
        try:
            return cls.model_validate(clean)
        except ValidationError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON dict written to the store (state as its string)."""
        d = self.model_dump(mode="json")
        d["trail"] = [[round(t, 3), s] for t, s in self.trail]
        return d

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)


def parse_records(records: Optional[dict[str, Any]]) -> dict[str, ProgressRecord]:
    """job -> record, from ProgressStore.all() dicts (or records already parsed); broken ones left out."""
    out: dict[str, ProgressRecord] = {}
    for job, rec in (records or {}).items():
        r = rec if isinstance(rec, ProgressRecord) else ProgressRecord.parse(rec)
        if r is not None:
            out[job] = r
    return out
