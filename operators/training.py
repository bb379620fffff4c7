"""The training operator: one plan job on exactly the plan's GPU ids, behind per-GPU and per-job leases.

- never runs a job finished in this sweep again (its progress record in the plan's sweep is done:
  the task succeeds at once); a new sweep of the same workload trains it again;
- skips when its plan was superseded before it started (the newer plan runs the job), unless the
  newer plan keeps this very job running here;
- runs only on the worker of its node when workers serve nodes ([saturn] node), on that node's
  devices ([saturn] device_ids: plan device i is the worker's i-th);
- leases the job and its devices (waiting while another holder has them; the leases are heartbeated,
  and a lost lease kills the runner at once), then calls
  saturn_airflow.execution.launch.run_job, streaming its progress lines into the task log;
- while running, stops (checkpoint, exit "preempted") when a newer plan preempts the job; the task
  then ends SKIPPED and the job resumes from its checkpoint in the newer plan's DAG;
- a failed attempt raises, and Airflow's retry resumes from the latest checkpoint.
Actual start and end are in the job's progress record, the events log and this task's XCom.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from saturn_airflow import settings
from saturn_airflow.control import segments

from saturn_airflow.execution import leases
from saturn_airflow.execution.devices import physical_ids

from saturn_airflow.tasks import events as job_events
from saturn_airflow.tasks import training as training_steps
from saturn_airflow.store.records import PlanStore, Store


class SaturnTrainOperator(BaseOperator):
    ui_color = "#e6f4ea"

    def __init__(self, *, plan_id: str, job: str, store_url: Optional[str] = None, watch_s: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.plan_id, self.job, self.store_url, self.watch_s = plan_id, job, store_url, watch_s
        self._stop = threading.Event()

    def on_kill(self) -> None:
        self._stop.set()

    def execute(self, context):
        store = Store(self.store_url or settings.store_url())
        plan = PlanStore(store).get(self.plan_id)
        try:
            return self._execute(store, plan, context)
        except AirflowSkipException:
            raise
        except BaseException as e:
            ti = context["ti"]
            if isinstance(e, AirflowFailException) or getattr(ti, "try_number", 1) >= (self.retries or 0) + 1:  # the last attempt
                training_steps.mark_failed(store, plan, self.job, f"{type(e).__name__}: {e}")
            raise

    def _execute(self, store: Store, plan, context):
        a = plan.assignment(self.job)
        here = settings.node()
        if here and here != a.node:  # a worker serves one node: its queue must be that node's only
            raise AirflowFailException(f"{self.job} is planned on node {a.node!r} but ran on the worker of node "
                                       f"{here!r}: start each node's worker with --queues <node> and [saturn] node=<node>")
        verdict, why = training_steps.start_decision(store, plan, self.job)
        self.log.info("%s: %s", verdict, why)
        if verdict == "skip":
            raise AirflowSkipException(why)
        devices = physical_ids(list(a.gpu_ids), a.node)
        job_key = leases.job_key(plan.workload, self.job, sweep=plan.sweep)
        owner = {"job": self.job, "plan_id": self.plan_id, "workload": plan.workload, "sweep": plan.sweep,
                 "dag_run": context["run_id"], "node": a.node, "worker_node": here, "devices": devices,
                 "try": context["ti"].try_number}
        if verdict == "done":
            if training_steps.open_attempt(store, plan, self.job) is not None:
                # a finished job needs no devices: its job lease alone serializes recording the end
                with leases.acquire(store, [job_key], owner, timeout_s=settings.lease_timeout_s(), log=self.log.info):
                    self._close_killed_attempt(store, plan)
            return {"job": self.job, "status": "done", "ran": False}
        keys = [job_key] + [leases.device_key(a.node, g) for g in a.gpu_ids]
        kept = self.job in ((plan.model_extra or {}).get("kept") or [])
        timeout = None if kept else settings.lease_timeout_s()
        with leases.acquire(store, keys, owner, timeout_s=timeout, log=self.log.info) as held:
            verdict, why = training_steps.start_decision(store, plan, self.job)  # the world may have moved while we waited
            if verdict == "done":
                self.log.info("%s", why)
                self._close_killed_attempt(store, plan)
                return {"job": self.job, "status": "done", "ran": False}
            if verdict == "skip":
                raise AirflowSkipException(why)
            return self._run(store, plan, a, context, devices, held)

    def _close_killed_attempt(self, store: Store, plan) -> None:
        """Under the job lease: the end of an attempt whose task was killed after its ranks finished the job."""
        closed = training_steps.close_open_attempt(store, plan, self.job)
        if closed:
            self.log.info("%s: the attempt started under plan %s ended %s but its task was killed first; its end "
                          "is recorded now", self.job, closed["plan_id"], closed["status"])

    def _run(self, store: Store, plan, a, context, devices: list[int], held) -> dict:
        from saturn_airflow.execution.launch import run_job  # torch side: imported only when a job runs

        wl_path = (plan.model_extra or {}).get("workload_path")
        preempted_by: list[str] = []

        def watch():
            while not self._stop.wait(self.watch_s):
                try:
                    child = training_steps.preempt_check(store, plan, self.job)
                except Exception as e:  # pragma: no cover
                    self.log.warning("preemption check failed: %s", e)
                    continue
                if child:
                    preempted_by.append(child)
                    self.log.info("plan %s preempts %s: stopping at the next checkpoint", child, self.job)
                    self._stop.set()
                    return

        watcher = threading.Thread(target=watch, name="saturn-preempt-watch", daemon=True)
        watcher.start()
        started = time.time()
        job_events.record_event(store, plan.workload, {"event": "start", "job": self.job, "plan_id": plan.plan_id,
                                                        "device_ids": a.gpu_ids, "node": a.node,
                                                        "try": context["ti"].try_number}, sweep=plan.sweep)
        self.log.info("running %s: %s on %s devices %s (planned %.0f s)", self.job, a.parallelism, a.node, a.gpu_ids,
                      a.runtime_s)
        if devices != list(a.gpu_ids):
            self.log.info("node %s: plan devices %s are this worker's devices %s", a.node, a.gpu_ids, devices)
        status = "failed"
        try:
            result = run_job(wl_path, self.job, parallelism=a.parallelism, knobs=dict(a.knobs),
                              device_ids=devices, store_url=store.url, plan_id=plan.plan_id,
                              sweep=plan.sweep, log=self.log.info, stop_event=self._stop, kill_event=held.lost,
                              env=store.env(), node=a.node, ckpt_every_s=settings.checkpoint_every_s(),
                              steps=segments.target(plan, self.job), rung_gate=segments.rung_gate(plan, self.job),
                              on_start=lambda proc: held.attach_group(proc.pid))
            status = getattr(result, "status", "failed")
        finally:
            self._stop.set()
            watcher.join(timeout=5)
            ended = time.time()
            job_events.record_event(store, plan.workload, {"event": "end", "job": self.job, "plan_id": plan.plan_id,
                                                            "status": status, "started_at": started,
                                                            "ended_at": ended, "device_ids": a.gpu_ids},
                                    sweep=plan.sweep)
        out = {"job": self.job, "status": status, "ran": True, "started_at": started, "ended_at": ended,
               "planned_s": a.runtime_s, "actual_s": ended - started}
        self.log.info("%s ended %s after %.1f s (planned %.1f s)", self.job, status, ended - started, a.runtime_s)
        if status in ("done", "paused", "stopped"):  # paused: at the end of its segment (a rung)
            return out
        if status == "preempted" and preempted_by:
            raise AirflowSkipException(f"preempted by plan {preempted_by[0]}: {self.job} resumes from its checkpoint there")
        if status == "preempted":  # a SIGTERM from outside (a node drain), not a newer plan: nobody else runs it
            raise AirflowException(f"job {self.job} was stopped from outside at step {getattr(result, 'step', '?')} "
                                   "(checkpoint saved); a retry resumes it")
        raise AirflowException(f"job {self.job} failed ({getattr(result, 'message', '') if status else ''}); "
                               "a retry resumes from the latest checkpoint")


class SaturnPlanResultOperator(BaseOperator):
    """The plan's verdict, after every training task ended (trigger_rule all_done): fails the DAG run,
    naming each job and why, when a job of this plan failed for good; succeeds when every job is done
    or handed to a newer plan. Clearing a failed job's task (with its downstream, this task) resumes
    the job from its checkpoint and then re-checks."""

    ui_color = "#f1f3f6"

    def __init__(self, *, plan_id: str, store_url: Optional[str] = None, **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.plan_id, self.store_url = plan_id, store_url

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowFailException

        store = Store(self.store_url or settings.store_url())
        plan = PlanStore(store).get(self.plan_id)
        ok, bad = training_steps.plan_result(store, plan)
        for job, why in bad.items():
            self.log.error("job %s did not finish: %s", job, why)
        if bad:
            raise AirflowFailException(f"{len(bad)} of {len(plan.assignments)} jobs did not finish: "
                                       + "; ".join(f"{j}: {w}" for j, w in bad.items()))
        self.log.info("every job of plan %s is done or handed to a newer plan (%d)", self.plan_id, len(ok))
        return {"done": ok}
