"""MLflow tracking of a sweep: one parent run per sweep, one child run per job, continued, never duplicated.

Run ids live in the store, so every process of the sweep (each job's runner, on any node, after any
re-plan or resume) finds the same runs:
  tracking/mlflow/<workload>/<sweep>/sweep.json       {"run_id", "experiment_id", "uri"}  (created once)
  tracking/mlflow/<workload>/<sweep>/jobs/<job>.json  {"run_id", "logged_step"}
The parent is created by whichever job starts first; two starting at once both create one, the
store's create-once write picks the winner and the loser deletes its own. A job's run gets its
hyper-parameters and first placement (parallelism, GPUs, plan id) as params, which MLflow keeps
immutable; the current placement is in the `saturn.*` tags, updated on every attempt. Metrics are
logged once per evaluation step (`logged_step`): a resume that repeats an evaluation logs nothing,
and points recorded while the server was away are logged with the next evaluation.
A preempted job's run stays RUNNING until it resumes; the parent ends, tagged with the winner, when
every job of the sweep has finished.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import time
from typing import Optional

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from saturn_airflow.store.files import PlanStore, ProgressStore, Store
from saturn_airflow.store.metrics import flat_params

TERMINAL = ("done", "failed", "stopped")
RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_PARAM_MAX = 6000


class MlflowTracker:
    def __init__(self, uri: str, store: Store, workload: str, sweep: str, *, plan_id: str = "",
                 experiment: Optional[str] = None):
        self.uri, self.store, self.workload, self.sweep, self.plan_id = uri, store, workload, sweep, plan_id
        self.experiment = experiment or workload
        for var, default in RETRIES.items():  # a tracker that is away must not hold training up for minutes
            os.environ.setdefault(var, default)
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment_id: Optional[str] = None

    # ---- ids, kept in the store ---------------------------------------------------------------
    def _rel(self, *parts: str) -> str:
        return posixpath.join("tracking", "mlflow", self.workload, self.sweep, *parts)

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment)
                except MlflowException:  # another job created it first
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def parent_run_id(self) -> str:
        rec = self.store.read_json(self._rel("sweep.json"))
        if rec:
            return rec["run_id"]
        run = self.client.create_run(self.experiment_id(), run_name=f"{self.workload} sweep {self.sweep}",
                                     tags={"saturn.kind": "sweep", "saturn.sweep": self.sweep,
                                           "saturn.workload": self.workload})
        rid = run.info.run_id
        if self.store.create_json(self._rel("sweep.json"), {"run_id": rid, "experiment_id": self.experiment_id(),
                                                           "uri": self.uri, "created_at": time.time()}):
            self.client.log_batch(rid, params=[Param("workload", self.workload), Param("sweep", self.sweep),
                                               Param("root_plan_id", self.sweep)])
            return rid
        self.client.delete_run(rid)  # lost the race: the sweep's run is the other one
        return self.store.read_json(self._rel("sweep.json"))["run_id"]

    def job_record(self, job: str) -> Optional[dict]:
        return self.store.read_json(self._rel("jobs", f"{job}.json"))

    def job_run_id(self, job: str) -> Optional[str]:
        rec = self.job_record(job)
        return rec["run_id"] if rec else None

    # ---- what the runner reports ----------------------------------------------------------------
    def job_started(self, job, *, plan_id: str, parallelism: str, gpus: int, start_step: int) -> str:
        parent = self.parent_run_id()
        if self.client.get_run(parent).info.status != "RUNNING":  # a job came back (a retry after the end)
            self.client.update_run(parent, status="RUNNING")
        rec = self.job_record(job.name)
        tags = [RunTag("saturn.plan_id", plan_id), RunTag("saturn.parallelism", parallelism),
                RunTag("saturn.gpus", str(gpus)), RunTag("saturn.state", "running"),
                RunTag("saturn.start_step", str(start_step))]
        if rec is None:
            run = self.client.create_run(self.experiment_id(), run_name=job.name, tags={
                "mlflow.parentRunId": parent, "saturn.kind": "job", "saturn.job": job.name,
                "saturn.sweep": self.sweep, "saturn.workload": self.workload})
            rid = run.info.run_id
            params = {**flat_params(job), "parallelism": parallelism, "gpus": gpus, "plan_id": plan_id,
                      "sweep": self.sweep}
            self.client.log_batch(rid, params=[Param(k, str(v)[:_PARAM_MAX]) for k, v in params.items()], tags=tags)
            self.store.write_json(self._rel("jobs", f"{job.name}.json"), {"run_id": rid, "logged_step": -1,
                                                                         "attempts": 1})
            return rid
        rid = rec["run_id"]
        rec["attempts"] = int(rec.get("attempts", 1)) + 1
        self.client.update_run(rid, status="RUNNING")
        self.client.log_batch(rid, tags=tags + [RunTag("saturn.attempts", str(rec["attempts"]))])
        self.store.write_json(self._rel("jobs", f"{job.name}.json"), rec)
        return rid

    def log_points(self, job: str, points: list[dict]) -> int:
        """Log the results record's points after the last one logged (so a point missed while the
        server was away is logged with the next); returns how many were logged."""
        rec = self.job_record(job)
        if rec is None:
            return 0
        new = [p for p in points if int(p["step"]) > int(rec.get("logged_step", -1))]
        if not new:
            return 0
        metrics = []
        for p in new:
            ts = int(float(p.get("t") or time.time()) * 1000)
            metrics += [Metric(k, float(v), ts, int(p["step"])) for k, v in p["values"].items()]
            if p.get("train_loss") is not None:
                metrics.append(Metric("train_loss", float(p["train_loss"]), ts, int(p["step"])))
        for i in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(rec["run_id"], metrics=metrics[i:i + 900])
        rec["logged_step"] = max(int(p["step"]) for p in new)
        self.store.write_json(self._rel("jobs", f"{job}.json"), rec)
        return len(new)

    def job_ended(self, job: str, status: str, export: Optional[dict] = None) -> None:
        rid = self.job_run_id(job)
        if rid is None:
            return
        if export and export.get("path"):
            self._log_export(rid, export)
        self.client.set_tag(rid, "saturn.state", status)
        if status == "done":
            self.client.set_terminated(rid, "FINISHED")
        elif status in ("failed", "stopped"):
            self.client.set_terminated(rid, "FAILED" if status == "failed" else "KILLED")
        self.maybe_end_sweep()

    def _log_export(self, rid: str, export: dict) -> None:
        folder = tempfile.mkdtemp(prefix="saturn-mlflow-")
        try:
            rel = posixpath.dirname(export["path"])
            for name in ("model.safetensors", "model.json"):
                local = os.path.join(folder, name)
                self.store.fs.get_file(posixpath.join(rel, name), local)
            self.client.log_artifacts(rid, folder, artifact_path="model")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.client.set_tag(rid, "saturn.model_path", export["path"])

    def sweep_jobs(self) -> Optional[list[str]]:
        """Every job of the sweep: the union over its plan versions (a re-plan lists only what remained);
        None for a sweep without plans (jobs trained by hand)."""
        ps = PlanStore(self.store)
        try:
            root = ps.get(self.sweep)
        except KeyError:  # NotFoundError
            return None
        jobs, pid, seen = [], root.plan_id, set()
        while pid and pid not in seen:
            seen.add(pid)
            jobs += [a.job for a in ps.get(pid).assignments if a.job not in jobs]
            pid = ps.superseded_by(pid)
        return jobs

    def maybe_end_sweep(self) -> bool:
        """When every job of the sweep has finished: tag the winner, end the parent run."""
        jobs = self.sweep_jobs()
        if not jobs:
            return False
        progress = ProgressStore(self.store, sweep=self.sweep).all(self.workload)
        if any((progress.get(j) or {}).get("state") not in TERMINAL for j in jobs):
            return False
        from saturn_airflow.views.leaderboard import leaderboard

        board = leaderboard(self.store, self.workload, self.sweep, jobs)
        parent = self.parent_run_id()
        w = board.winner
        if w is not None:
            self.client.set_tag(parent, "saturn.winner", w.job)
            self.client.log_batch(parent, metrics=[Metric(f"winner_{w.metric}", float(w.final),
                                                          int(time.time() * 1000), int(w.final_step or 0))])
            wid = self.job_run_id(w.job)
            if wid:
                self.client.set_tag(wid, "saturn.winner", "true")
        self.client.set_terminated(parent, "FINISHED")
        return True


__all__ = ["MlflowTracker"]
