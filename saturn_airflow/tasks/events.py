"""The append-only job event log `events/<workload>.jsonl`: start and end of every training attempt.

Tests and the soak read it to prove that every job finished exactly once.
"""

from __future__ import annotations

import json
import os
import time

from saturn_airflow.store.files import Store


def record_event(store: Store, workload: str, event: dict) -> None:
    """Append one job event (local stores; a remote store keeps only the ProgressStore records)."""
    if not store.local:
        return
    path = store.local_path("events", f"{workload}.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({"t": time.time(), **event}) + "\n").encode())
    finally:
        os.close(fd)


def events(store: Store, workload: str) -> list[dict]:
    if not store.local:
        return []
    try:
        with open(store.local_path("events", f"{workload}.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
