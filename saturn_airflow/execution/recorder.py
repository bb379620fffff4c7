"""Rank 0's record of what a training attempt achieved: its evaluations, its attempt, its exported model.

The runner makes one per launch. It writes the job's MetricsStore record (and mirrors it to MLflow
when tracking is on) and, when the job finishes, exports the model from the final checkpoint.
Like progress, results are advisory while training runs: a failed write is printed, never fatal.
"""

from __future__ import annotations

from typing import Optional

from saturn_airflow.store.files import Store
from saturn_airflow.store.metrics import MetricsStore


class JobRecorder:
    def __init__(self, *, store_url: str, workload: str, job, plan_id: str, parallelism: str,
                 device_ids: list[int], world_size: int, progress=None, log=print):
        self.store = Store(store_url)
        self.metrics = MetricsStore(self.store)
        self.workload, self.job, self.plan_id = workload, job, plan_id
        self.parallelism, self.device_ids, self.world_size = parallelism, list(device_ids), world_size
        self.progress = progress  # the ProgressReporter, for the training loss beside each evaluation
        self.log = log
        self.tracker = None
        from saturn_airflow.tracking import tracker_for

        self.tracker = self._guard("tracking", lambda: tracker_for(self.store, workload, plan_id, log=log))

    def _guard(self, what: str, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - results must never stop training
            self.log(f"[saturn] {self.job.name}: {what} failed: {type(e).__name__}: {e}")
            return None

    def start(self, start_step: int) -> None:
        self._guard("results record", lambda: self.metrics.start_attempt(
            self.workload, self.job, plan_id=self.plan_id, parallelism=self.parallelism,
            device_ids=self.device_ids, start_step=start_step))
        if self.tracker is not None:
            self._guard("MLflow", lambda: self.tracker.job_started(
                self.job, plan_id=self.plan_id, parallelism=self.parallelism, gpus=self.world_size,
                start_step=start_step))

    def evaluated(self, step: int, values: dict, seconds: float) -> None:
        train_loss = getattr(self.progress, "last_loss", None)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.log(f"[saturn] {self.job.name}: held-out at step {step}: {shown} ({seconds:.2f} s)")
        self._guard("results record", lambda: self.metrics.add_point(
            self.workload, self.job.name, step, values, plan_id=self.plan_id, parallelism=self.parallelism,
            world_size=self.world_size, eval_s=round(seconds, 4), train_loss=train_loss))
        if self.tracker is not None:
            self._guard("MLflow", lambda: self.tracker.log_evaluation(self.job.name, step, values, train_loss))

    def finish(self, status: str, step: int) -> None:
        self._guard("results record", lambda: self.metrics.end_attempt(self.workload, self.job.name, status, step))

    def export(self, checkpoint_root: str) -> Optional[dict]:
        """After the job is done and the process group is gone: the consolidated model (and its MLflow artifact)."""
        from saturn_airflow.execution.export import export_from_checkpoint

        rec = self.metrics.get(self.workload, self.job.name) or {}
        last = (rec.get("points") or [{}])[-1]
        meta = self._guard("model export", lambda: export_from_checkpoint(
            self.job, checkpoint_root, self.store, self.workload,
            info={"plan_id": self.plan_id, "metrics": last.get("values"), "metrics_step": last.get("step")}))
        if meta:
            self.log(f"[saturn] {self.job.name}: model exported to {meta['path']} ({meta['bytes']} bytes, "
                     f"{meta['export_s']:.2f} s)")
        return meta

    def ended(self, status: str, export: Optional[dict]) -> None:
        """The attempt is over: close (or leave open, if preempted) the MLflow run; end the sweep's when all are."""
        if self.tracker is not None:
            self._guard("MLflow", lambda: self.tracker.job_ended(self.job.name, status, export))


__all__ = ["JobRecorder"]
