"""Launching the runner on exactly the given devices (torchrun for several, directly for one), and telling
done/preempted/failed apart.

One device: the runner runs directly (RANK/WORLD_SIZE/MASTER_* set as torchrun would), without
torchrun's own interpreter and torch import (seconds per launch, tens on a loaded machine).

GPUs: CUDA_VISIBLE_DEVICES = the ids, LOCAL_RANK picks one. CPU: one device = one core; the launch
is pinned to the cores (taskset / sched_setaffinity) and each rank to its own core, one thread.
A stop_event sends SIGTERM: the ranks agree on a stop step, checkpoint and exit 75; torchrun itself
then exits 1, so the status comes from the ranks' result files, never from torchrun's exit code.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from saturn_airflow.execution.checkpoint import local_folder
from saturn_airflow.execution.devices import ENV_NODE, cpu_cores, device_kind, launch_env
from saturn_airflow.execution.runner import EXIT_PREEMPTED
from saturn_airflow.spec.progress import JobState
from saturn_airflow.store.records import BY_HAND

LOSS_LOG = "losses.jsonl"  # under a job's checkpoint root: {"start": K, ...} per launch, then {"step", "loss", "t"} per step
STOP_GRACE_S = 90.0  # after SIGTERM, how long ranks get to save before SIGKILL


@dataclass
class LaunchOutcome:
    returncode: Optional[int]
    result: Optional[dict]
    errors: list[dict]
    output_tail: list[str]
    t_launch: float
    t_exit: float
    timed_out: bool = False
    stopped: bool = False
    killed: bool = False  # by kill_event: no checkpoint was written

    def root_cause(self) -> Optional[dict]:
        """The failing rank's own error, not its peers' echoes ("connection closed by peer")."""
        if not self.errors:
            return None
        ooms = [e for e in self.errors if e.get("oom")]
        if ooms:
            return ooms[0]
        echo = ("connection closed", "connection reset", "broken pipe", "timed out", "socket")
        firsts = [e for e in self.errors if not any(s in e.get("error", "").lower() for s in echo)]
        return (firsts or self.errors)[0]

    @property
    def sigkilled(self) -> bool:
        """A rank (or torchrun) died by SIGKILL without a word: the kernel's OOM killer, most likely."""
        return self.returncode in (-9, 137) or any("Signal 9 (SIGKILL)" in l or "exitcode  : -9" in l
                                                   for l in self.output_tail)

    def message(self) -> str:
        rc = self.root_cause()
        if rc:
            return rc["error"].splitlines()[0][:500]
        if self.timed_out:
            return "timed out"
        if self.sigkilled:
            return "a rank was killed by SIGKILL (likely out of memory)"
        tail = [l for l in self.output_tail if l.strip()][-3:]
        return f"exit status {self.returncode}: " + " | ".join(tail)[-500:]


def _runner_cmd(n: int) -> list[str]:
    """torchrun for several ranks; one rank runs the runner directly (see _single_rank_env): torchrun's
    agent imports torch and starts its rendezvous before the rank does, and outlives it at exit, which
    measured 1.5-2x the launch-to-first-step time of a direct start."""
    if n == 1:
        return [sys.executable, "-m", "saturn_airflow.execution.runner"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={n}",
            "--max-restarts=0", "-m", "saturn_airflow.execution.runner"]


def _single_rank_env() -> dict[str, str]:
    """What torchrun would give a world of one rank: env:// rendezvous on a free local port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def launch_runner(runner_args: list[str], device_ids: list[int], *, result_dir: str,
                  log: Callable[[str], None] = print, stop_event: Optional[threading.Event] = None,
                  timeout_s: Optional[float] = None, env: Optional[dict] = None, kind: Optional[str] = None,
                  on_start: Optional[Callable[[subprocess.Popen], None]] = None,
                  kill_event: Optional[threading.Event] = None) -> LaunchOutcome:
    """Run `python -m saturn_airflow.execution.runner <runner_args>` on `device_ids` (under torchrun for
    several); wait for it.

    `stop_event`: SIGTERM (the ranks checkpoint and exit); `kill_event`: SIGKILL at once, no checkpoint
    (the devices' leases were lost to another holder)."""
    kind = kind or device_kind()
    os.makedirs(result_dir, exist_ok=True)
    tmp = os.path.join(result_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    t0 = time.time()
    full_env = {**os.environ, **launch_env(device_ids, kind), "SATURN_LAUNCH_T0": repr(t0),
                "SATURN_RUN_ID": uuid.uuid4().hex[:8], "TMPDIR": tmp, "PYTHONUNBUFFERED": "1",
                **(_single_rank_env() if len(device_ids) == 1 else {}), **(env or {})}
    cmd = _runner_cmd(len(device_ids)) + list(runner_args) + ["--result-dir", result_dir]
    cores = set(cpu_cores(list(device_ids))) if kind == "cpu" and hasattr(os, "sched_setaffinity") else None

    def preexec() -> None:
        if cores:
            os.sched_setaffinity(0, cores)  # pins torchrun and its ranks' start
        die_with_parent()

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                            bufsize=1, start_new_session=True, preexec_fn=preexec)
    if on_start:
        on_start(proc)
    tail: deque[str] = deque(maxlen=200)

    def pump():
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            try:
                log(line)
            except Exception:  # noqa: BLE001 - a broken log sink must not stall the pipe
                pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    stopped = timed_out = killed = False
    term_at: Optional[float] = None
    while proc.poll() is None:
        now = time.time()
        if kill_event is not None and kill_event.is_set() and not killed:
            killed = True
            _signal(proc, signal.SIGKILL)
        if term_at is None and stop_event is not None and stop_event.is_set():
            stopped, term_at = True, now
            _signal(proc, signal.SIGTERM)
        if term_at is None and timeout_s is not None and now - t0 > timeout_s:
            timed_out, term_at = True, now
            _signal(proc, signal.SIGTERM)
        if term_at is not None and now - term_at > (STOP_GRACE_S if stopped else 10.0):
            _signal(proc, signal.SIGKILL)
        time.sleep(0.05)
    t_exit = time.time()
    reader.join(timeout=5)
    _signal(proc, signal.SIGKILL)  # leftovers of the session, if any rank outlived torchrun
    result = None
    rp = os.path.join(result_dir, "result.json")
    if os.path.exists(rp):
        with open(rp) as f:
            result = json.load(f)
    errors = []
    for ep in sorted(glob.glob(os.path.join(result_dir, "error-rank*.json"))):
        with open(ep) as f:
            errors.append(json.load(f))
    shutil.rmtree(tmp, ignore_errors=True)
    return LaunchOutcome(proc.returncode, result, errors, list(tail), t0, t_exit, timed_out, stopped, killed)


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that launched it dies (Linux).

    torchrun forwards SIGTERM to its ranks, which agree on a stop, checkpoint and exit: an Airflow task
    process killed outright (SIGKILL, the OOM killer) leaves no training running behind it that a retry
    would race on the same devices."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the lease's process-group check still guards the devices
        pass


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class JobResult:
    status: str  # "done" | "paused" (at a rung) | "stopped" (early, for good) | "preempted" | "failed"
    job: str
    step: Optional[int] = None
    total: Optional[int] = None
    returncode: Optional[int] = None
    wall_s: float = 0.0
    message: str = ""
    checkpoint_dir: Optional[str] = None
    details: dict = field(default_factory=dict)


def _workload_file(workload, folder: str) -> tuple[str, str]:
    """A file the ranks can read, and the workload's name."""
    from saturn_airflow.spec.workload import Workload, load_workload

    if isinstance(workload, Workload):
        path = os.path.join(folder, "workload.json")
        with open(path, "w") as f:
            json.dump(workload.model_dump(mode="json"), f)
        return path, workload.name
    path = str(Path(workload).resolve())
    return path, load_workload(path).name


def checkpoint_root(store_url: str, workload: str, job: str, *, sweep: str, checkpoint_dir: Optional[str] = None) -> str:
    """The job's checkpoint folder in its sweep: `<checkpoint_url or store/checkpoints>/<workload>/<sweep>/<job>`
    (a local path or an fsspec URL every node reaches, so the job resumes on any node), or an override."""
    if checkpoint_dir:
        return checkpoint_dir
    from saturn_airflow.store import keys
    from saturn_airflow.store.records import Store

    return keys.checkpoint_dir(Store(store_url).checkpoint_root(), workload, sweep, job)


def run_job(workload, job: str, *, parallelism: str, knobs: dict, device_ids: list[int], store_url: str,
            plan_id: str, sweep: str = BY_HAND, log: Callable[[str], None] = print,
            stop_event: Optional[threading.Event] = None,
            checkpoint_dir: Optional[str] = None, ckpt_every_s: Optional[float] = None,
            ckpt_every_steps: Optional[int] = None, steps: Optional[int] = None, stop_at_step: Optional[int] = None,
            loss_log: Optional[str] = None, progress_every_s: float = 3.0, timeout_s: Optional[float] = None,
            env: Optional[dict] = None, on_start: Optional[Callable[[subprocess.Popen], None]] = None,
             rung_gate: Optional[str] = None, kill_event: Optional[threading.Event] = None,
             node: str = "") -> "JobResult":
    """Train `job` under `parallelism`/`knobs` on exactly `device_ids`, resuming from its latest checkpoint.

    Blocks until the job is done, preempted (stop_event set: SIGTERM, checkpoint, exit) or failed.
    Progress records go to the ProgressStore at `store_url` every `progress_every_s` seconds; records
    and checkpoints are those of `sweep` (a plan's `Plan.sweep`; by hand: `BY_HAND`).
    """
    if not device_ids:
        raise ValueError("run_job needs at least one device id")
    folder = tempfile.mkdtemp(prefix="saturn-run-")
    try:
        wpath, wname = _workload_file(workload, folder)
        ck = checkpoint_root(store_url, wname, job, sweep=sweep, checkpoint_dir=checkpoint_dir)
        local_ck = local_folder(ck)
        if loss_log is None and local_ck is not None:
            # every step of every attempt, next to the checkpoints (what was lost, what was learned);
            # an object-store root keeps no log (it cannot append)
            os.makedirs(local_ck, exist_ok=True)
            loss_log = os.path.join(local_ck, LOSS_LOG)
        args = ["--workload", wpath, "--job", job, "--parallelism", parallelism, "--knobs", json.dumps(knobs or {}),
                "--mode", "train", "--store", store_url, "--plan-id", plan_id or "", "--sweep", sweep,
                "--checkpoint-dir", ck,
                "--progress-every-s", str(progress_every_s)]
        for flag, val in (("--ckpt-every-s", ckpt_every_s), ("--ckpt-every-steps", ckpt_every_steps),
                          ("--steps", steps), ("--stop-at-step", stop_at_step), ("--loss-log", loss_log),
                          ("--rung-gate", rung_gate)):
            if val is not None:
                args += [flag, str(val)]
        out = launch_runner(args, list(device_ids), result_dir=os.path.join(folder, "result"), log=log,
                            stop_event=stop_event, timeout_s=timeout_s,
                            env={**_tracking_env(), **(env or {}), ENV_NODE: node}, on_start=on_start,
                            kill_event=kill_event)
        res = out.result or {}
        wall = out.t_exit - out.t_launch
        details = {"result": res, "errors": out.errors[:4]}
        if out.killed:  # the leases went to another holder, who now owns the job's progress record
            return JobResult("failed", job, res.get("step"), res.get("total"), out.returncode, wall,
                             "killed: its leases were taken over by another holder", ck, details)
        if res.get("status") == "done" and (out.returncode == 0 or out.stopped):
            # a stop that came after the last step (torchrun killed in its teardown): the job is done
            status, msg = "done", "done"
            if res.get("job_steps") and int(res.get("step") or 0) < int(res["job_steps"]):
                status, msg = "paused", f"paused at step {res.get('step')} (a rung): checkpoint saved"
        elif res.get("status") == "stopped" and out.returncode == 0:
            status, msg = "stopped", f"stopped early at step {res.get('step')}: checkpoint saved"
        elif res.get("status") == "paused" and out.returncode == 0:
            status, msg = "paused", f"paused at step {res.get('step')} (a rung, undecided): checkpoint saved"
        elif res.get("status") == "preempted" or (out.stopped and res.get("status") != "done"):
            status, msg = "preempted", "preempted (SIGTERM): checkpoint saved" if res else "stopped during start-up"
        else:
            status, msg = "failed", out.message()
        if status == "failed":
            _record_killed(store_url, sweep, wname, job, plan_id, msg, parallelism, device_ids)
        return JobResult(status, job, res.get("step"), res.get("total"), out.returncode, wall, msg, ck, details)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tracking_env() -> dict:
    """The tracking settings as the ranks' environment: they may live in airflow.cfg, which ranks never read."""
    from saturn_airflow import settings

    out = {}
    for option in ("mlflow_tracking_uri", "mlflow_experiment"):
        value = settings.get(option)
        if value:
            out[f"AIRFLOW__SATURN__{option.upper()}"] = value
    return out


def _record_killed(store_url, sweep, workload, job, plan_id, msg, parallelism, device_ids) -> None:
    """A rank killed outright (SIGKILL, OOM-killer) leaves its record "running": the launcher records that
    this attempt ended (interrupted: a retry resumes it; the training task marks it failed for good)."""
    from saturn_airflow.store.records import ProgressStore, Store

    progress = ProgressStore(Store(store_url), sweep=sweep)
    rec = progress.get(workload, job)
    if rec and rec.get("state") == "running":
        progress.mark_ended(workload, job, state=JobState.INTERRUPTED, plan_id=plan_id, message=msg,
                            parallelism=parallelism, device_ids=list(device_ids))


__all__ = ["run_job", "JobResult", "launch_runner", "LaunchOutcome", "checkpoint_root", "EXIT_PREEMPTED", "LOSS_LOG"]

