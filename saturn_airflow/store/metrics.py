"""Per-job results records: held-out evaluation points keyed by step, the job's attempts, its hyper-parameters.

Layout under the store root:
  metrics/<workload>/<sweep>/<job>.json   {"job", "workload", "sweep", "evaluation": {metric, goal, metrics}, "params", "spec",
                                   "points": [{"step", "values", "plan_id", "parallelism", "world_size", "t", ...}],
                                   "attempts": [{"plan_id", "parallelism", "device_ids", "start_step",
                                                 "started_at", "ended_at", "end_step", "status"}]}
Per sweep, like the progress records (a second sweep of the workload has its own results). Only
the job's running rank 0 writes it (leases give a job one runner at a time), each write
replaces the file whole (atomic). A point is keyed by its step: a resume that repeats an
evaluation (after a lost checkpoint interval) replaces it with the same values, never adds one.
Kept apart from the progress record, which says where a job is now; this says what it achieved.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from saturn_airflow.store.files import Store


def flat_params(job) -> dict[str, Any]:
    """A job's hyper-parameters as flat dotted keys (`optimizer.lr`, `model_args.size`), scalars only."""
    d = job.model_dump(mode="json", exclude={"name", "evaluation", "parallelisms"})
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif v is not None:
            out[prefix] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk("", d)
    return out


class MetricsStore:
    def __init__(self, store: Optional[Store] = None, *, sweep: str):
        self.store = store or Store()
        self.sweep = sweep

    def rel(self, workload: str, job: str) -> str:
        return f"metrics/{workload}/{self.sweep}/{job}.json"

    def get(self, workload: str, job: str) -> Optional[dict]:
        return self.store.read_json(self.rel(workload, job))

    def all(self, workload: str) -> dict[str, dict]:
        out = {}
        for name in self.store.list(f"metrics/{workload}/{self.sweep}"):
            rec = self.get(workload, name)
            if rec:
                out[name] = rec
        return out

    def _put(self, workload: str, job: str, rec: dict) -> None:
        rec["updated_at"] = time.time()
        self.store.write_json(self.rel(workload, job), rec)

    def _base(self, workload: str, job) -> dict:
        rec = self.get(workload, job.name) or {"job": job.name, "workload": workload, "sweep": self.sweep,
                                               "points": [], "attempts": []}
        rec["params"] = flat_params(job)
        rec["spec"] = job.model_dump(mode="json")  # enough to rebuild the model later (`saturn export`)
        ev = job.evaluation
        rec["evaluation"] = None if ev is None else {"metric": ev.metric, "goal": ev.goal, "metrics": ev.names,
                                                     "every_steps": ev.every_steps, "batches": ev.batches}
        rec["steps"] = job.steps
        return rec

    def start_attempt(self, workload: str, job, *, plan_id: str, parallelism: str, device_ids: list[int],
                      start_step: int, node: Optional[str] = None) -> dict:
        rec = self._base(workload, job)
        now = time.time()
        rec["attempts"].append({"plan_id": plan_id, "parallelism": parallelism, "device_ids": list(device_ids),
                                "node": node, "start_step": start_step, "started_at": now, "ended_at": None,
                                "end_step": start_step, "status": "running", "updated_at": now})
        self._put(workload, job.name, rec)
        return rec

    def add_point(self, workload: str, job: str, step: int, values: dict[str, float], **info: Any) -> dict:
        rec = self.get(workload, job) or {"job": job, "workload": workload, "sweep": self.sweep, "points": [],
                                          "attempts": []}
        now = time.time()
        point = {"step": int(step), "values": {k: float(v) for k, v in values.items()}, "t": now, **info}
        points = [p for p in rec.get("points", []) if p.get("step") != point["step"]] + [point]
        rec["points"] = sorted(points, key=lambda p: p["step"])
        if rec.get("attempts"):
            rec["attempts"][-1].update(end_step=int(step), updated_at=now)
        self._put(workload, job, rec)
        return rec

    def end_attempt(self, workload: str, job: str, status: str, step: int) -> Optional[dict]:
        rec = self.get(workload, job)
        if not rec or not rec.get("attempts"):
            return rec
        now = time.time()
        rec["attempts"][-1].update(ended_at=now, updated_at=now, end_step=int(step), status=status)
        self._put(workload, job, rec)
        return rec


def wall_s(rec: Optional[dict]) -> Optional[float]:
    """Seconds the job spent running, over all its attempts (an attempt killed outright counts to its last write)."""
    if not rec or not rec.get("attempts"):
        return None
    total = 0.0
    for a in rec["attempts"]:
        end = a.get("ended_at") or a.get("updated_at") or a.get("started_at")
        if a.get("started_at") is not None and end is not None:
            total += max(0.0, float(end) - float(a["started_at"]))
    return total


__all__ = ["MetricsStore", "flat_params", "wall_s"]
