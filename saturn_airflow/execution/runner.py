"""The job runner: the program every torchrun rank runs (`python -m torch.distributed.run ... -m saturn_airflow.execution.runner`).

Modes:
  train: train a job's steps under one parallelism and knobs; checkpoint, resume, report progress.
  trial: the profiler's trial: `Parallelism.search` on these devices, result written as JSON.
Exit status: 0 done, 75 preempted (SIGTERM: all ranks agreed on a stop step and saved), else failed.
Rank 0 writes `<result-dir>/result.json`; any rank that fails writes `<result-dir>/error-rank<r>.json`
(with whether it was an out-of-memory), so the launcher can name the root cause, not the peers'
"connection closed" echoes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from typing import Callable, Optional

from saturn_airflow.store.atomic import write_atomic

EXIT_PREEMPTED = 75


def say(line: str, stream=None) -> None:
    """A line for the task log. The log is advisory: when its reader is gone (the Airflow task process
    was killed and the launch is stopping), writing must not end training before its checkpoint."""
    stream = stream or sys.stdout
    try:
        print(line, file=stream, flush=True)
    except (BrokenPipeError, OSError, ValueError):
        try:
            devnull = open(os.devnull, "w")
            sys.stdout = sys.stderr = devnull
        except OSError:
            pass


def _write_json(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj))


class ProgressReporter:
    """Rank 0's progress: a ProgressStore record (spec.progress.ProgressRecord) every few seconds and a
    readable line on stdout. The record's trail of (time, step) samples is what every reader computes
    the job's steady rate from (control.rates.estimate); the loss log, when given, gets every step."""

    def __init__(self, *, workload: str, job: str, plan_id: str, sweep: str, parallelism: str, device_ids: list[int],
                 store_url: Optional[str], every_s: float = 3.0, loss_log: Optional[str] = None, enabled: bool = True,
                 job_steps: Optional[int] = None, node: str = ""):
        self.enabled = enabled
        self.node = node
        self.job_steps = job_steps  # the job's own steps: a launch that ends before them has paused
        self.segment_end: Optional[Callable[[int], int]] = None  # set by a rung gate: the total is where this segment ends
        self.workload, self.job, self.plan_id = workload, job, plan_id
        self.parallelism, self.device_ids = parallelism, device_ids
        self.every_s = every_s
        self.loss_log = open(loss_log, "a") if (loss_log and enabled) else None
        self.store = None
        if enabled and store_url:
            from saturn_airflow.store.records import ProgressStore, Store

            self.store = ProgressStore(Store(store_url), sweep=sweep)
        self.started_at = time.time()
        self.total = 0
        self.start_step = 0
        self.t_first: Optional[float] = None
        self.last_put = 0.0
        self.last_loss: Optional[float] = None
        self.trail: list[tuple[float, int]] = []
        self.window: Optional[tuple[float, int]] = None  # (time, step) at the previous record

    def _recent_rate(self, now: float, step: int) -> Optional[float]:
        """Steps per second since the previous record (display only; drift uses the trail)."""
        prev, self.window = self.window, (now, step)
        if prev is None or now <= prev[0] or step <= prev[1]:
            return None
        return (step - prev[1]) / (now - prev[0])

    def _sample(self, now: float, step: int) -> None:
        from saturn_airflow.spec.progress import TRAIL_EVERY_S, TRAIL_MAX, TRAIL_S

        if not self.trail or now - self.trail[-1][0] >= TRAIL_EVERY_S:
            self.trail.append((now, step))
            while len(self.trail) > TRAIL_MAX or (len(self.trail) > 2 and now - self.trail[1][0] >= TRAIL_S):
                self.trail.pop(0)

    def _record(self, state: str, step: int, finished: bool = False) -> dict:
        if self.segment_end is not None and not finished:
            self.total = self.segment_end(step)
        from saturn_airflow.spec.progress import JobState, ProgressRecord

        now = time.time()
        rate = 0.0
        if self.t_first is not None and step > self.start_step and now > self.t_first:
            rate = (step - self.start_step) / (now - self.t_first)
        rec = ProgressRecord(
            plan_id=self.plan_id, state=JobState(state), step=step, total=self.total, rate_steps_per_s=rate,
            recent_rate_steps_per_s=self._recent_rate(now, step), started_at=self.started_at,
            first_step_at=self.t_first, updated_at=now, finished_at=now if finished else None,
            trail=list(self.trail), parallelism=self.parallelism, device_ids=self.device_ids, node=self.node or None,
            start_step=self.start_step, loss=self.last_loss, pid=os.getpid(), launcher_pid=os.getppid())
        return rec.to_dict()

    def _put(self, rec: dict) -> None:
        if self.store is not None:
            try:
                self.store.put(self.workload, self.job, rec)
            except Exception as e:  # noqa: BLE001 - progress is advisory: never kill training over it
                say(f"[saturn] progress write failed: {e}")

    def start(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        self.total, self.start_step = total, step
        self.t_first = time.time()
        self.trail = [(self.t_first, step)]
        if self.loss_log is not None:
            self.loss_log.write(json.dumps({"start": step, "t": self.t_first, "plan_id": self.plan_id,
                                            "parallelism": self.parallelism, "device_ids": self.device_ids}) + "\n")
            self.loss_log.flush()
        self._put(self._record("running", step))
        say(f"[saturn] {self.job}: {self.parallelism} on devices {self.device_ids}, "
            f"{'resuming at' if step else 'starting at'} step {step}/{total}")

    def update(self, step: int, loss: Optional[float]) -> None:
        if not self.enabled:
            return
        self.last_loss = loss
        now = time.time()
        self._sample(now, step)
        if self.loss_log is not None:
            self.loss_log.write(json.dumps({"step": step - 1, "loss": loss, "t": round(now, 4)}) + "\n")
            self.loss_log.flush()
        if now - self.last_put >= self.every_s or step == self.total:
            self.last_put = now
            rec = self._record("running", step)
            self._put(rec)
            rate = rec["rate_steps_per_s"]
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            say(f"[saturn] {self.job}: step {step}/{self.total} ({100.0 * step / max(1, self.total):.0f}%) "
                f"{rate:.2f} steps/s ETA {eta:.0f}s loss {loss if loss is None else round(loss, 4)}")

    def finish(self, state: str, step: int) -> None:
        if not self.enabled:
            return
        if state == "done" and self.job_steps is not None and step < self.job_steps:
            state = "paused"  # the end of a segment (a rung), not of the job: a later plan resumes or stops it
        rec = self._record(state, step, finished=True)
        if self.job_steps is not None:
            rec["job_steps"] = self.job_steps
        self._put(rec)
        say(f"[saturn] {self.job}: {state} at step {step}/{self.total}")

    def fail(self, step: int, message: str) -> None:
        """This launch failed: the record says interrupted (a retry resumes it); only the training task
        knows whether an attempt is left, and marks the job failed for good when none is."""
        if not self.enabled:
            return
        rec = self._record("interrupted", step, finished=True)
        rec["error"] = message[:500]
        self._put(rec)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="saturn_airflow.execution.runner", description=__doc__.splitlines()[0])
    p.add_argument("--workload", required=True, help="workload file (.yaml or .json, grid already allowed)")
    p.add_argument("--job", required=True)
    p.add_argument("--parallelism", required=True)
    p.add_argument("--knobs", default="{}", help="JSON object")
    p.add_argument("--mode", choices=("train", "trial"), default="train")
    p.add_argument("--result-dir", required=True)
    p.add_argument("--store", default=None, help="store URL for progress records")
    p.add_argument("--plan-id", default="")
    p.add_argument("--sweep", default=None, help="the sweep whose progress records this job writes (default: by hand)")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--ckpt-every-s", type=float, default=None)
    p.add_argument("--ckpt-every-steps", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="train up to this step (default: the job's steps)")
    p.add_argument("--stop-at-step", type=int, default=None, help="act as if preempted at this step (tests)")
    p.add_argument("--loss-log", default=None, help="rank 0 appends {step, loss} JSON lines here")
    p.add_argument("--rung-gate", choices=("halving", "ray-asha"), default=None,
                   help="decide at each rung in this process, training on past it when the job may: halving (the "
                        "sweep's successive halving: go on when promoted, stop when lost, else pause) or ray-asha "
                        "(Ray Tune's rule: go on or stop); default: stop at --steps and let the sweep decide")
    p.add_argument("--progress-every-s", type=float, default=3.0)
    from saturn_airflow.profiling.profiler import DEFAULT_MEASURE, DEFAULT_MEASURE_S, DEFAULT_PRECISION, DEFAULT_WARMUP

    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    p.add_argument("--measure", type=int, default=DEFAULT_MEASURE, help="at least this many measured steps")
    p.add_argument("--measure-s", type=float, default=DEFAULT_MEASURE_S, help="and at least this many measured seconds")
    p.add_argument("--precision", type=float, default=DEFAULT_PRECISION,
                   help="...unless the median step time is known to this fraction sooner (0: off)")
    p.add_argument("--knob-start", type=int, default=0)
    p.add_argument("--search", choices=("first-fit", "best"), default="first-fit")
    return p.parse_args(argv)


def _load_workload(path: str):
    from saturn_airflow.spec.workload import load_workload, parse_workload

    if path.endswith(".json"):
        with open(path) as f:
            return parse_workload(json.load(f), source=path)
    return load_workload(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.result_dir, exist_ok=True)
    os.environ["SATURN_RUNNER_MODE"] = args.mode  # the examples' fault-injection knobs act in train mode only
    stop = None
    # install the handler before the slow imports: a SIGTERM during start-up still means "preempted"
    early = {"term": False}

    def on_term(signum, frame):
        early["term"] = True
        if stop is not None:
            stop.requested = True

    signal.signal(signal.SIGTERM, on_term)
    from saturn_airflow.execution.launch import die_with_parent

    die_with_parent()  # torchrun killed outright: stop (checkpoint) too, never train on unguarded devices
    import torch.distributed as dist

    from saturn_airflow.execution.devices import ENV_NODE, bind_rank
    from saturn_airflow.parallelisms import get_parallelism
    from saturn_airflow.parallelisms.base import StopSignal

    devices = bind_rank()
    stop = StopSignal(stop_at_step=args.stop_at_step)
    stop.requested = early["term"]
    progress = None
    recorder = None
    step_now = 0
    try:
        dist.init_process_group(devices.backend, device_id=devices.device if devices.kind == "cuda" else None)
        workload = _load_workload(args.workload)
        job = workload.job(args.job)
        par = get_parallelism(args.parallelism)
        knobs = json.loads(args.knobs)
        if args.mode == "trial":
            return _trial(args, devices, job, par)
        from saturn_airflow.execution.checkpoint import CheckpointManager
        from saturn_airflow.store.files import BY_HAND

        ck_root = args.checkpoint_dir or os.path.join(args.result_dir, "checkpoints")
        every_s = args.ckpt_every_s if args.ckpt_every_s is not None else (None if args.ckpt_every_steps else 60.0)
        ckpt = CheckpointManager(ck_root, devices=devices, every_s=every_s, every_steps=args.ckpt_every_steps,
                                 meta={"parallelism": par.name, "world_size": devices.world_size, "knobs": knobs})
        progress = ProgressReporter(workload=workload.name, job=job.name, plan_id=args.plan_id,
                                    sweep=args.sweep or BY_HAND, parallelism=par.name,
                                    device_ids=devices.ids, store_url=args.store, every_s=args.progress_every_s,
                                     loss_log=args.loss_log, enabled=devices.is_main, job_steps=job.steps,
                                     node=os.environ.get(ENV_NODE, ""))

        def on_step(step, loss):
            nonlocal step_now
            step_now = step

        if devices.is_main and args.store:
            from saturn_airflow.execution.recorder import JobRecorder

            recorder = JobRecorder(store_url=args.store, workload=workload.name, sweep=args.sweep or BY_HAND, job=job,
                                   plan_id=args.plan_id, parallelism=par.name, device_ids=devices.ids,
                                   world_size=devices.world_size, progress=progress, log=say)
            recorder.start(ckpt.latest_step() or 0)
        evaluator = None
        if job.evaluation is not None:
            from saturn_airflow.execution.evaluation import Evaluator

            halving = workload.halving()
            on_result = recorder.evaluated if recorder is not None else None
            if args.rung_gate and halving is not None and recorder is not None:
                on_result = _rung_gate(args.rung_gate, halving, workload.name, job.name, recorder, stop, progress,
                                       plan_ids=_lineage_ids(args.store, args.plan_id),
                                       may_go_on=lambda step: _trains_on(args.store, args.plan_id, job.name, step))
            evaluator = Evaluator(job, devices, on_result=on_result,
                                  extra_steps=halving.rungs_of(job.name) if halving is not None else ())
        t_ready = time.time()
        # a gate decides at every rung from the first one on: the launch may train on to the job's end
        until = job.steps if (args.rung_gate and evaluator is not None) else (args.steps or job.steps)
        res = par.execute(job, devices, knobs, until, ckpt, progress, stop=stop, on_step=on_step, evaluator=evaluator)
        if devices.world_size > 1 and args.rung_gate:  # only rank 0 decided: every rank reports the same end
            import torch

            codes = (None, "stopped", "paused")
            flag = torch.tensor([float(codes.index(stop.state) if stop.state in codes else 0)], device=devices.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if int(flag[0]) > 0:
                stop.state = res.status = codes[int(flag[0])]
        finished = res.status == "done" and res.step >= job.steps
        if recorder is not None:
            recorder.finish("done" if finished else ("paused" if res.status == "done" else res.status), res.step)
        out = {"status": res.status, "step": res.step, "total": res.total, "start_step": res.start_step,
               "t_ready": t_ready, "t_end": time.time(), "save_s": ckpt.saves, "checkpoint": ck_root,
               "train_wall_s": res.train_wall_s, "train_cpu_s": res.train_cpu_s, "cpu_s": time.process_time(),
               "evaluation": evaluator.last if evaluator is not None else None, "job_steps": job.steps}
        dist.barrier()
        dist.destroy_process_group()
        if recorder is not None:  # one process, no group: the checkpoint loads into the plain model
            export = recorder.export(ck_root) if finished else None
            out["export"] = export
            recorder.ended("done" if finished else ("stopped" if res.status == "stopped" else "preempted"), export)
            recorder = None
        if devices.is_main:
            out["t_end"] = time.time()
            _write_json(os.path.join(args.result_dir, "result.json"), out)
        return 0 if res.status in ("done", "stopped", "paused") else EXIT_PREEMPTED
    except BaseException as e:  # noqa: BLE001 - every failure must leave a structured reason
        from saturn_airflow.execution.devices import is_oom

        msg = f"{type(e).__name__}: {e}"
        _write_json(os.path.join(args.result_dir, f"error-rank{devices.rank}.json"), {
            "rank": devices.rank, "oom": is_oom(e), "error": msg[:2000], "traceback": traceback.format_exc()[-4000:],
            "candidate": _CANDIDATE.get("i")})
        if progress is not None:
            progress.fail(step_now, msg)
        if recorder is not None:
            recorder.finish("failed", step_now)
            recorder.ended("failed", None)
        say(f"[saturn] rank {devices.rank} failed: {msg[:500]}", sys.stderr)
        return 1


_CANDIDATE: dict = {}


def _lineage_ids(store_url: Optional[str], plan_id: str) -> Optional[set[str]]:
    """The plan ids of this sweep (the plan and its ancestors), or None when the plan is not in a store."""
    if not store_url or not plan_id:
        return None
    try:
        from saturn_airflow.store.files import PlanStore, Store

        return {p.plan_id for p in PlanStore(Store(store_url)).lineage(plan_id)}
    except Exception:  # noqa: BLE001 - no such plan (a launch by hand): no filter
        return None


def _trains_on(store_url: Optional[str], plan_id: str, job: str, step: int) -> bool:
    """Whether the newest plan of this sweep lets `job`, promoted at rung `step`, train on here
    (control/segments.trains_on: nobody waits for its devices, more devices would not pay)."""
    if not store_url or not plan_id:
        return True
    from saturn_airflow import settings
    from saturn_airflow.control.segments import trains_on
    from saturn_airflow.errors import NotFoundError
    from saturn_airflow.store.files import PlanStore, ProgressStore, Store

    store = Store(store_url)
    ps = PlanStore(store)
    try:
        newest = plan_id
        while ps.superseded_by(newest):
            newest = ps.superseded_by(newest)
        plan = ps.get(newest)
        return trains_on(plan, job, step, ProgressStore(store, sweep=plan.sweep).all(plan.workload),
                         restart_overhead_s=settings.restart_overhead_s())
    except NotFoundError:  # a launch by hand, outside any plan: nothing is in the way
        return True
    except Exception:  # noqa: BLE001 - unreadable store: the safe answer is to pause
        return False


def _rung_gate(policy: str, halving, workload: str, job: str, recorder, stop, progress, plan_ids=None,
               may_go_on=lambda step: True):
    """Rank 0's evaluation callback that also decides at each rung in this process: a stop or a pause
    becomes the agreed stop of every rank at this step (checkpoint, exit), with that state.

    halving: the sweep's verdict (control/early_stop.py) from the group's values recorded so far:
      promoted trains on to the next rung when no job of the newest plan waits for these devices and
      no idle device would pay (`may_go_on`), lost stops, anything else pauses for the sweep to plan;
    ray-asha: Ray Tune's rule against the values recorded at that rung before this job's.
    """
    from saturn_airflow.control import segments
    from saturn_airflow.control.early_stop import PROMOTE, STOP, ray_asha_continues

    rungs = set(halving.rungs_of(job))
    group = halving.groups.get(halving.group_of(job) or "", [])
    if progress is not None and policy == "halving":  # the record's total: where this segment ends
        progress.segment_end = lambda step: halving.segment_end(job, step)

    def on_result(step: int, values: dict, seconds: float) -> None:
        recorder.evaluated(step, values, seconds)
        if step not in rungs:
            return
        records = recorder.metrics.all(workload)
        if policy == "ray-asha":
            seen = segments.rung_values_with_time(halving, records, step)
            mine = seen.get(job)
            if mine is None:
                return
            earlier = [v for other, (v, t) in seen.items() if other in group and other != job and t < mine[1]]
            if not ray_asha_continues(mine[0], earlier, halving.keep, halving.goal):
                print(f"[saturn] {job}: stopped at rung {step} ({policy}: {mine[0]:.4g} against {len(earlier)} "
                      "earlier values)", flush=True)
                stop.state, stop.requested = "stopped", True
            return
        verdict = segments.verdicts(halving, records, {}, plan_ids).get(job)
        if verdict is None or verdict.rung != step:
            return
        go_on = verdict.action == PROMOTE and may_go_on(step)
        print(f"[saturn] {job}: {verdict.describe()}" + ("; trains on" if go_on else ""), flush=True)
        if not go_on:
            stop.state, stop.requested = ("stopped" if verdict.action == STOP else "paused"), True

    return on_result


def _trial(args, devices, job, par) -> int:
    """Profile one (job, parallelism, device count): search knobs, time steps and a checkpoint round trip."""
    import torch.distributed as dist

    t0_launch = float(os.environ.get("SATURN_LAUNCH_T0", "0") or 0)
    marks = {}

    def on_candidate(i, knobs):
        _CANDIDATE["i"] = i
        marks.setdefault("t_first_build", time.time())
        if devices.is_main:  # survives a crash: the profiler relaunches from the next candidate
            _write_json(os.path.join(args.result_dir, "candidate.json"), {"i": i, "knobs": knobs})

    rt_dir = os.path.join(args.result_dir, "roundtrip")
    if devices.is_main:
        os.makedirs(rt_dir, exist_ok=True)
    res = par.search(job, devices, warmup=args.warmup, measure=args.measure, measure_s=args.measure_s,
                     precision=args.precision,
                     first_fit=args.search == "first-fit",
                     start=args.knob_start, on_candidate=on_candidate, roundtrip_dir=rt_dir)
    out = {"status": "ok" if res.feasible else "infeasible", "knobs": res.knobs, "step_s": res.step_s,
           "reason": res.reason, **res.stats, "world_size": devices.world_size,
           "t_launch": t0_launch, "t_first_build": marks.get("t_first_build")}
    dist.barrier()
    dist.destroy_process_group()
    out["t_end"] = time.time()
    if devices.is_main:
        _write_json(os.path.join(args.result_dir, "result.json"), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
