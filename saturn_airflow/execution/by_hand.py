"""One job trained by hand, outside Airflow (`saturn train`): its input checked up front, resumed from
its latest checkpoint, and its outcome as an exit status (the CLI contract in docs/contracts.md).

Exit status: 0 finished, or stopped at `stop_at_step` with a checkpoint written; 75 preempted by a
signal (checkpoint written, the same command resumes); 1 failed; 2 bad input (raised here as
SaturnInputError before anything runs or is written).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from saturn_airflow.errors import NotFoundError, SaturnInputError
from saturn_airflow.execution.runner import EXIT_PREEMPTED
from saturn_airflow.spec.names import check_name
from saturn_airflow.store.files import BY_HAND

EXIT_DONE, EXIT_FAILED = 0, 1


@dataclass
class HandJob:
    """A checked request: everything `train` needs, nothing left to fail as input."""

    workload_path: str
    workload: object  # spec.workload.Workload
    job: object  # spec.workload.JobSpec
    parallelism: str
    knobs: dict
    device_ids: list[int]
    store_url: str
    sweep: str = BY_HAND
    stop_at_step: Optional[int] = None
    checkpoint_dir: str = field(default="")


def parse_devices(text: str, available: list[int], kind: str) -> list[int]:
    """'0,1' -> [0, 1]: distinct ids of devices this machine has."""
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise SaturnInputError(f"--devices {text!r}: expected device ids separated by commas, e.g. 0,1") from None
    if len(set(ids)) != len(ids):
        raise SaturnInputError(f"--devices {text!r}: a device is named twice")
    missing = [i for i in ids if i not in available]
    if missing:
        have = f"{available[0]}..{available[-1]}" if available else "none"
        raise SaturnInputError(f"--devices {text!r}: no {kind} device {missing[0]} on this machine (it has {have})")
    return ids


def parse_knobs(text: str) -> dict:
    try:
        knobs = json.loads(text)
    except json.JSONDecodeError as e:
        raise SaturnInputError(f"--knobs: malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(knobs, dict):
        raise SaturnInputError(f"--knobs: expected a JSON object, got {type(knobs).__name__}")
    return knobs


def prepare(workload_path: str, job: str, parallelism: str, devices: str, *, knobs: str = "{}",
            store_url: Optional[str] = None, sweep: str = BY_HAND, stop_at_step: Optional[int] = None) -> HandJob:
    """Check everything a by-hand run depends on; SaturnInputError (one line) on the first problem."""
    from saturn_airflow import settings
    from saturn_airflow.execution.devices import available_devices, device_kind
    from saturn_airflow.execution.launch import checkpoint_root
    from saturn_airflow.parallelisms import get_parallelism, registry
    from saturn_airflow.parallelisms.base import check_factories
    from saturn_airflow.spec.workload import load_workload
    from saturn_airflow.store.files import Store

    wl = load_workload(workload_path)
    try:
        spec = wl.job(job)
    except NotFoundError:
        names = ", ".join(j.name for j in wl.jobs[:8]) + (", ..." if len(wl.jobs) > 8 else "")
        raise SaturnInputError(f"{workload_path}: no job {job!r} in workload {wl.name!r} (jobs: {names})") from None
    if parallelism not in registry():
        raise SaturnInputError(f"--parallelism {parallelism!r} is not registered (registered: {', '.join(sorted(registry()))})")
    kind = device_kind()
    ids = parse_devices(devices, available_devices(kind), kind)
    knob_dict = parse_knobs(knobs)
    try:
        check_name("sweep", sweep)
    except ValueError as e:
        raise SaturnInputError(f"--sweep: {e}") from None
    if stop_at_step is not None and stop_at_step < 1:
        raise SaturnInputError(f"--stop-at-step {stop_at_step}: must be a step number >= 1")
    check_factories(spec)
    reason = get_parallelism(parallelism).check(spec, len(ids))
    if reason:
        raise SaturnInputError(f"job {job!r} cannot run under {parallelism} on {len(ids)} device(s): {reason}")
    url = store_url or settings.store_url()
    store = Store(url)
    if not store.local:
        raise SaturnInputError(f"--store {url}: checkpoints need a local folder store")
    return HandJob(workload_path, wl, spec, parallelism, knob_dict, ids, url, sweep, stop_at_step,
                   checkpoint_root(url, wl.name, job, sweep=sweep))


def train(hj: HandJob, *, stop_event: threading.Event, out: Callable[[str], None] = print,
          err: Callable[[str], None] = print, log: Optional[Callable[[str], None]] = None) -> int:
    """Train `hj` from its latest checkpoint to the end (or its stop step); the exit status.

    `out` gets this function's lines, `log` every line of the ranks and torchrun (default: `out`)."""
    from saturn_airflow.execution import leases
    from saturn_airflow.execution.checkpoint import read_latest
    from saturn_airflow.execution.launch import run_job
    from saturn_airflow.store.files import Store

    name, total = hj.job.name, hj.job.steps
    ptr = read_latest(hj.checkpoint_dir)
    at = int(ptr["step"]) if ptr else 0
    if ptr:
        out(f"resuming at step {at} of {total} (checkpoint written under {ptr.get('parallelism')} on "
            f"{ptr.get('world_size')} device(s), {hj.checkpoint_dir})")
    else:
        out(f"starting at step 0 of {total} (no checkpoint in {hj.checkpoint_dir})")
    if at >= total:
        out(f"job {name}: already finished at step {at}/{total}; nothing to train")
        return EXIT_DONE
    if hj.stop_at_step is not None and at >= hj.stop_at_step:
        out(f"job {name}: already at step {at} (--stop-at-step {hj.stop_at_step}); nothing to train")
        return EXIT_DONE
    store = Store(hj.store_url)
    owner = {"job": name, "workload": hj.workload.name, "sweep": hj.sweep, "plan_id": None, "by_hand": True}
    try:
        held = leases.acquire(store, [leases.job_key(hj.workload.name, name, sweep=hj.sweep)], owner, timeout_s=0)
    except leases.LeaseTimeout:
        cur = leases.holder(store, leases.job_key(hj.workload.name, name, sweep=hj.sweep)) or {}
        err(f"job {name} of sweep {hj.sweep} is already training (pid {cur.get('pid')}, plan {cur.get('plan_id')})")
        return EXIT_FAILED
    with held:
        res = run_job(hj.workload_path, name, parallelism=hj.parallelism, knobs=hj.knobs, device_ids=hj.device_ids,
                      store_url=hj.store_url, plan_id="", sweep=hj.sweep, log=log or out, stop_event=stop_event,
                      stop_at_step=hj.stop_at_step)
    if res.status == "done":
        out(f"job {name}: done at step {total}/{total}")
        return EXIT_DONE
    step = res.step if res.step is not None else at
    if res.status == "preempted" and not stop_event.is_set():
        out(f"job {name}: stopped at step {step} (--stop-at-step {hj.stop_at_step}); checkpoint in {hj.checkpoint_dir}")
        return EXIT_DONE
    if res.status == "preempted":
        out(f"job {name}: preempted at step {step}; checkpoint in {hj.checkpoint_dir}; the same command resumes it")
        return EXIT_PREEMPTED
    err(f"job {name} failed: {res.message}")
    return EXIT_FAILED
