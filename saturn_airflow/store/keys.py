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


def progress_dir(workload: str) -> str:
    return f"progress/{workload}"


def progress(workload: str, job: str) -> str:
    return f"{progress_dir(workload)}/{job}"


def events_stream(workload: str) -> str:
    """The append-only job events (start / end of every training attempt) of one workload."""
    return f"events/{workload}"


def device_lease(node: str, device_id: int) -> str:
    """One device (GPU, or CPU core) of a node, by its id in the plan (0 .. gpus-1)."""
    return f"device/{node}/{int(device_id)}"


def job_lease(workload: str, job: str) -> str:
    """One training job: never run twice at once, across plan versions and nodes."""
    return f"job/{workload}/{job}"


def checkpoint_dir(root: str, workload: str, job: str) -> str:
    """A job's checkpoint folder under the checkpoint root (local path or fsspec URL)."""
    if "://" in root:
        return f"{root.rstrip('/')}/{workload}/{job}"
    return posixpath.join(root, workload, job)
