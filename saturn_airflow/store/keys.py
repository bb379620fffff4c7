"""Every name the store files a record under, built in one place.

Documents are addressed by slash-separated keys, leases by lease keys, log rows by stream names; the
callers never spell them out, so changing what identifies a job (its workload today) is one edit here.
"""

from __future__ import annotations

import posixpath

LEASE_STREAM = "leases"  # the append-only history of every lease acquire / release / break


def plan(plan_id: str) -> str:
    return f"plans/{plan_id}"


def superseded(plan_id: str) -> str:
    return f"superseded/{plan_id}"


def claim(name: str) -> str:
    return f"claims/{name}"


def progress_dir(workload: str, sweep: str) -> str:
    return f"progress/{workload}/{sweep}"


def progress(workload: str, sweep: str, job: str) -> str:
    """The latest progress record of a job in one sweep (a run of the planning DAG and its re-plans)."""
    return f"{progress_dir(workload, sweep)}/{job}"


def events_stream(workload: str) -> str:
    """The append-only job events (start / end of every training attempt) of one workload."""
    return f"events/{workload}"


def device_lease(node: str, device_id: int) -> str:
    """One device (GPU, or CPU core) of a node, by its id in the plan (0 .. gpus-1)."""
    return f"device/{node}/{int(device_id)}"


def job_lease(workload: str, sweep: str, job: str) -> str:
    """One training job of one sweep: never run twice at once, across the sweep's plan versions and
    nodes (another sweep's job of the same name is another job)."""
    return f"job/{workload}/{sweep}/{job}"


def checkpoint_dir(root: str, workload: str, sweep: str, job: str) -> str:
    """A job's checkpoint folder in one sweep, under the checkpoint root (local path or fsspec URL)."""
    if "://" in root:
        return f"{root.rstrip('/')}/{workload}/{sweep}/{job}"
    return posixpath.join(root, workload, sweep, job)
