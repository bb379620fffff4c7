"""The append-only job event log `events/<workload>.jsonl`: start and end of every training attempt.

Every event names its sweep (`Plan.sweep`), so "every job finished exactly once" is checked per
sweep: a second run of the planning DAG trains every job again. Tests and the soak read it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

from saturn_airflow.store.files import Store


def record_event(store: Store, workload: str, event: dict, *, sweep: str) -> None:
    """Append one job event of `sweep` (local stores; a remote store keeps only the ProgressStore records)."""
    if not store.local:
        return
    path = store.local_path("events", f"{workload}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({"t": time.time(), **event, "sweep": sweep}) + "\n").encode())
    finally:
        os.close(fd)


def events(store: Store, workload: str, sweep: Optional[str] = None) -> list[dict]:
    """The workload's events, oldest first; only those of `sweep` when given."""
    if not store.local:
        return []
    try:
        with open(store.local_path("events", f"{workload}.jsonl")) as f:
            out = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return out if sweep is None else [e for e in out if e.get("sweep") == sweep]
