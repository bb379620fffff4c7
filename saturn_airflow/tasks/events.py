"""The append-only job events of a workload (log stream events/<workload> in the store): start and end
of every training attempt, on whichever node it ran.

Every event names its sweep (`Plan.sweep`), so "every job finished exactly once" is checked per
sweep: a second run of the planning DAG trains every job again. Tests and the soak read it.
"""

from __future__ import annotations

from typing import Optional

from saturn_airflow.store import keys
from saturn_airflow.store.records import Store


def record_event(store: Store, workload: str, event: dict, *, sweep: str) -> None:
    """Append one job event of `sweep` (its time is the store database's clock unless the event carries `t`)."""
    store.append(keys.events_stream(workload), {**event, "sweep": sweep})


def events(store: Store, workload: str, sweep: Optional[str] = None) -> list[dict]:
    """The workload's events in the order they were appended; only those of `sweep` when given."""
    out = store.read_log(keys.events_stream(workload))
    return out if sweep is None else [e for e in out if e.get("sweep") == sweep]
