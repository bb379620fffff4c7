"""Rank 0's record of what a training attempt achieved: its evaluations, its attempt, its exported model.

The runner makes one per launch. It writes the job's MetricsStore record (and mirrors it to MLflow
when tracking is on) and, when the job finishes, exports the model from the final checkpoint.
Like progress, results are advisory while training runs: a failed write is printed, never fatal.
"""

from __future__ import annotations

import time
from typing import Optional

from saturn_airflow.store.files import Store
from saturn_airflow.store.metrics import MetricsStore


class JobRecorder:
    TRACKER_RETRY_S = 60.0  # after a failed call to the tracker, leave it alone this long

    def __init__(self, *, store_url: str, workload: str, sweep: str, job, plan_id: str, parallelism: str,
                 device_ids: list[int], world_size: int, progress=None, log=print):
        self.store = Store(store_url)
        self.metrics = MetricsStore(self.store, sweep=sweep)
        self.workload, self.sweep, self.job, self.plan_id = workload, sweep, job, plan_id
        self.parallelism, self.device_ids, self.world_size = parallelism, list(device_ids), world_size
        self.progress = progress  # the ProgressReporter, for the training loss beside each evaluation
        self.log = log
        self.start_step = 0
        self._tracker_started = False
        self._tracker_away_until = 0.0
        from saturn_airflow.tracking import tracker_for

        self.tracker = self._guard("tracking", lambda: tracker_for(self.store, workload, sweep, plan_id))

    def _guard(self, what: str, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - results must never stop training
            self.log(f"[saturn] {self.job.name}: {what} failed: {type(e).__name__}: {str(e)[:300]}")
            return None

    def _track(self, fn) -> None:
        """Call the tracker (starting this attempt's run first); after a failure, skip it for a while."""
        if self.tracker is None or time.time() < self._tracker_away_until:
            return
        try:
            if not self._tracker_started:
                self.tracker.job_started(self.job, plan_id=self.plan_id, parallelism=self.parallelism,
                                         gpus=self.world_size, start_step=self.start_step)
                self._tracker_started = True
            fn()
        except Exception as e:  # noqa: BLE001 - results must never stop training
            self._tracker_away_until = time.time() + self.TRACKER_RETRY_S
            self.log(f"[saturn] {self.job.name}: MLflow failed ({type(e).__name__}: {str(e)[:300]}); "
                     f"retrying in {self.TRACKER_RETRY_S:.0f} s")

    def start(self, start_step: int) -> None:
        self.start_step = start_step
        self._guard("results record", lambda: self.metrics.start_attempt(
            self.workload, self.job, plan_id=self.plan_id, parallelism=self.parallelism,
            device_ids=self.device_ids, start_step=start_step))
        self._track(lambda: None)

    def evaluated(self, step: int, values: dict, seconds: float) -> None:
        train_loss = getattr(self.progress, "last_loss", None)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.log(f"[saturn] {self.job.name}: held-out at step {step}: {shown} ({seconds:.2f} s)")
        rec = self._guard("results record", lambda: self.metrics.add_point(
            self.workload, self.job.name, step, values, plan_id=self.plan_id, parallelism=self.parallelism,
            world_size=self.world_size, eval_s=round(seconds, 4), train_loss=train_loss))
        if rec is not None:
            self._track(lambda: self.tracker.log_points(self.job.name, rec["points"]))

    def finish(self, status: str, step: int) -> None:
        self._guard("results record", lambda: self.metrics.end_attempt(self.workload, self.job.name, status, step))

    def export(self, checkpoint_root: str) -> Optional[dict]:
        """After the job is done and the process group is gone: the consolidated model file."""
        from saturn_airflow.execution.export import export_from_checkpoint

        rec = self.metrics.get(self.workload, self.job.name) or {}
        last = (rec.get("points") or [{}])[-1]
        meta = self._guard("model export", lambda: export_from_checkpoint(
            self.job, checkpoint_root, self.store, self.workload, self.sweep,
            info={"plan_id": self.plan_id, "metrics": last.get("values"), "metrics_step": last.get("step")}))
        if meta:
            self.log(f"[saturn] {self.job.name}: model exported to {meta['path']} ({meta['bytes']} bytes, "
                     f"{meta['export_s']:.2f} s)")
        return meta

    def ended(self, status: str, export: Optional[dict]) -> None:
        """The attempt is over: the points not logged yet, the model as an artifact, the run closed (or
        left open when preempted); the sweep's run ends with its last job."""
        if self.tracker is None:
            return
        self._tracker_away_until = 0.0  # one last try, whatever happened before
        points = (self.metrics.get(self.workload, self.job.name) or {}).get("points") or []
        self._track(lambda: (self.tracker.log_points(self.job.name, points),
                             self.tracker.job_ended(self.job.name, status, export)))


__all__ = ["JobRecorder"]
