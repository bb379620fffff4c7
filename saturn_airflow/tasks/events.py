"""The append-only job event log `events/<workload>.jsonl`: start and end of every training attempt.

Every event names its sweep (`Plan.sweep`), so "every job finished exactly once" is checked per
sweep: a second run of the planning DAG trains every job again. Tests and the soak read it.
"""

from __future__ import annotations

import time
from typing import Optional

from saturn_airflow.store.files import Store


def record_event(store: Store, workload: str, event: dict, *, sweep: str) -> None:
    """Append one job event of `sweep` (local stores; a remote store keeps only the ProgressStore records)."""
    store.append_jsonl(f"events/{workload}.jsonl", {"t": time.time(), **event, "sweep": sweep})


def events(store: Store, workload: str, sweep: Optional[str] = None) -> list[dict]:
    """The workload's events, oldest first; only those of `sweep` when given."""
    out = store.read_jsonl(f"events/{workload}.jsonl")
    return out if sweep is None else [e for e in out if e.get("sweep") == sweep]
