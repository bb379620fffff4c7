"""Run a plan lineage on this machine the way its Airflow DAGs would, without Airflow (benchmarks).

One thread per assignment of each plan version, started once the jobs it takes GPUs over from
(`after`) have ended, behind the same per-job and per-device leases; each makes the training task's
decisions (tasks/training: done, skip when superseded, kept, preempted) and calls run_job, up to the
end of its segment. The watch looks every `poll_s` at the latest plan with the successive-halving
look the drift watch makes (tasks/rungs.look) and, when a rung re-plan is due, plans and publishes
the child, which supersedes its parent just as in Airflow. What this leaves out is Airflow's own
latency (a re-plan there is a planning DAG run, a DAG parse and a DAG run start: tens of seconds).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Optional

from saturn_airflow.control import segments
from saturn_airflow.execution import leases
from saturn_airflow.execution.launch import run_job
from saturn_airflow.spec.plan import Plan
from saturn_airflow.store.files import PlanStore, Store
from saturn_airflow.tasks import rungs
from saturn_airflow.tasks import training as decide


@dataclasses.dataclass
class Launch:
    job: str
    plan_id: str
    status: str
    devices: list[int]
    parallelism: str
    start: float
    end: float
    step: Optional[int]

    @property
    def device_s(self) -> float:
        return (self.end - self.start) * len(self.devices)


class PlanRunner:
    def __init__(self, store_url: str, workload_path: str, *, log: Callable[[str], None] = print,
                 replan_time_limit: float = 3.0, poll_s: float = 0.5, restart_overhead_s: float = 10.0):
        self.store = Store(store_url)
        self.ps = PlanStore(self.store)
        self.workload_path = workload_path
        self.log = log
        self.replan_time_limit = replan_time_limit
        self.poll_s = poll_s
        self.restart_overhead_s = restart_overhead_s
        self.launches: list[Launch] = []
        self.plans: list[Plan] = []
        self.replan_s: list[float] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- one task ---------------------------------------------------------------------------------
    def _task(self, plan: Plan, job: str, ended: dict[str, threading.Event]) -> None:
        a = plan.assignment(job)
        try:
            for up in a.after:
                ended[up].wait()
            verdict, why = decide.start_decision(self.store, plan, job)
            if verdict != "run":
                return
            keys = [leases.job_key(plan.workload, job, sweep=plan.sweep)] + [leases.device_key(a.node, g) for g in a.gpu_ids]
            owner = {"job": job, "plan_id": plan.plan_id, "workload": plan.workload, "dag_run": "local"}
            with leases.acquire(self.store, keys, owner, timeout_s=None, log=lambda m: None):
                verdict, why = decide.start_decision(self.store, plan, job)
                if verdict != "run":
                    return
                stop = threading.Event()
                watching = threading.Event()

                def watch():
                    while not watching.wait(1.0):
                        if decide.preempt_check(self.store, plan, job):
                            stop.set()
                            return

                w = threading.Thread(target=watch, daemon=True)
                w.start()
                t0 = time.time()
                res = run_job(self.workload_path, job, parallelism=a.parallelism, knobs=dict(a.knobs),
                              device_ids=list(a.gpu_ids), store_url=self.store.url, plan_id=plan.plan_id, sweep=plan.sweep,
                              log=lambda m: None, stop_event=stop, steps=segments.target(plan, job),
                              rung_gate=segments.rung_gate(plan, job))
                watching.set()
                w.join(5)
                with self._lock:
                    self.launches.append(Launch(job, plan.plan_id, res.status, list(a.gpu_ids), a.parallelism,
                                                t0, time.time(), res.step))
                self.log(f"  {time.strftime('%H:%M:%S')} {job}: {res.status} at step {res.step} "
                         f"({a.parallelism} x{a.gpus} on {a.gpu_ids}, {time.time() - t0:.0f} s)")
        finally:
            ended[job].set()

    def _start(self, plan: Plan) -> None:
        self.plans.append(plan)
        ended = {a.job: threading.Event() for a in plan.assignments}
        for a in sorted(plan.assignments, key=lambda a: (a.start_s, a.job)):
            t = threading.Thread(target=self._task, args=(plan, a.job, ended), daemon=True, name=a.job)
            t.start()
            self._threads.append(t)

    # -- the lineage ------------------------------------------------------------------------------
    def run(self, plan: Plan, *, early_stop: bool = True, timeout_s: float = 7200.0) -> None:
        """Publish and run `plan` and (early_stop) every rung re-plan after it, until all work has ended."""
        plan = self.ps.publish(plan)
        self._start(plan)
        deadline = time.time() + timeout_s
        current = plan
        while time.time() < deadline:
            time.sleep(self.poll_s)
            if early_stop and segments.section(current) is not None:
                event = rungs.look(self.store, current)
                if event is not None:
                    t0 = time.time()
                    res = rungs.replan_from_store(self.store, current.plan_id, owner="local", reason=event["reason"],
                                                  solver="highs", time_limit=self.replan_time_limit,
                                                  restart_overhead_s=self.restart_overhead_s)
                    self.replan_s.append(time.time() - t0)
                    if res.plan is not None:
                        current = self.ps.publish(res.plan)
                        self.log(f"  {time.strftime('%H:%M:%S')} re-plan ({event['reason']}): {res.message}")
                        self._start(current)
                        continue
            if all(not t.is_alive() for t in self._threads):
                if early_stop and segments.section(current) is not None and rungs.look(self.store, current):
                    continue  # the last segment just ended and freed everything: one more re-plan
                return
        raise TimeoutError(f"the sweep did not finish within {timeout_s:.0f} s")
