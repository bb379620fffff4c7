"""The append-only job events of a workload (log stream events/<workload> in the store): start and end
of every training attempt, on whichever node it ran.

Tests and the soak read it to prove that every job finished exactly once.
"""

from __future__ import annotations

from saturn_airflow.store import keys
from saturn_airflow.store.records import Store


def record_event(store: Store, workload: str, event: dict) -> None:
    """Append one job event (its time is the store database's clock unless the event carries `t`)."""
    store.append(keys.events_stream(workload), event)


def events(store: Store, workload: str) -> list[dict]:
    """Every event of the workload, in the order they were appended."""
    return store.read_log(keys.events_stream(workload))
