"""The provider's `[saturn]` settings, read lazily: environment first, then Airflow's config, then defaults.

Every option works from the environment as AIRFLOW__SATURN__<OPTION> (Airflow's own convention, so the
same variable also feeds `airflow config get-value saturn <option>`). Airflow's config is consulted only
when Airflow is already imported in this process (a task, the scheduler, the dag-processor): the
engine and the CLI never pay for importing Airflow, and never create an airflow.cfg by accident.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

DEFAULTS: dict[str, str] = {
    "store_url": "",             # empty: $SATURN_HOME, else $AIRFLOW_HOME/saturn
    "store_db": "",              # SQLAlchemy URL of the record database; empty: SQLite file in store_url
    "store_conn_id": "",         # ...or an Airflow connection holding that database
    "checkpoint_url": "",        # folder or fsspec URL of the checkpoints; empty: <store_url>/checkpoints
    "checkpoint_every_s": "60",  # a running job checkpoints this often: what a killed node loses at most
    "lease_ttl_s": "60",         # a lease whose holder stopped heartbeating this long is broken by a waiter
    "node": "",                  # this worker's node name (its queue); empty: not pinned to a node
    "device_ids": "",            # this worker's device ids (CUDA ordinals or CPU core indexes); empty: all
    "nodes": "",                 # the cluster's node names with a worker each: profile tasks go to their queues
    "solver": "highs",
    "time_limit": "30",
    "drift_threshold": "0.1",    # re-plan when the projected makespan is later than planned by 10%...
    "drift_min_s": "60",         # ...and by at least 60 s
    "drift_poll_s": "5",         # how often the drift trigger reads the progress records
    "restart_overhead_s": "10",  # what a preempted job pays to restart (process launch, checkpoint load)
    "min_preempt_gain": "0.05",  # preempt running jobs only when that shortens the makespan by 5%...
    "max_replans": "5",          # re-plans allowed in one plan lineage
    "pool_prefix": "saturn_",    # pool of node N: <pool_prefix>N
    "manage_pools": "true",      # the planning DAG creates/resizes the pools (REST API, connection saturn_api)
    "lease_timeout_s": "3600",   # how long a training task waits for its devices' leases
    "render_max_plans": "200",   # the factory renders the newest N plan versions
}


def _from_airflow(option: str) -> Optional[str]:
    if "airflow" not in sys.modules:
        return None
    try:
        from airflow.configuration import conf

        if conf.has_option("saturn", option):
            value = conf.get("saturn", option)
            return None if value is None else str(value)
    except Exception:  # pragma: no cover - a broken config must not break the engine
        return None
    return None


def get(option: str, default: Optional[str] = None) -> str:
    """One option as a string: AIRFLOW__SATURN__<OPTION>, else Airflow's [saturn] option, else the default."""
    env = os.environ.get(f"AIRFLOW__SATURN__{option.upper()}")
    if env is not None:
        return env
    value = _from_airflow(option)
    if value not in (None, ""):
        return value
    if default is not None:
        return default
    return DEFAULTS.get(option, "")


def get_float(option: str) -> float:
    try:
        return float(get(option))
    except ValueError:
        return float(DEFAULTS[option])


def get_int(option: str) -> int:
    return int(get_float(option))


def store_url() -> str:
    """$SATURN_HOME, else [saturn] store_url, else $AIRFLOW_HOME/saturn (~/airflow/saturn)."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.environ.get("SATURN_HOME") or get("store_url") or os.path.join(home, "saturn")


def store_db() -> str:
    """The record database's SQLAlchemy URL: [saturn] store_db, else the Airflow connection
    [saturn] store_conn_id, else "" (the store then keeps a SQLite file in its folder)."""
    url = get("store_db")
    if url:
        return url
    conn_id = get("store_conn_id")
    return connection_uri(conn_id) if conn_id else ""


def connection_uri(conn_id: str) -> str:
    """The URI of an Airflow connection: from Airflow when this process already runs Airflow (any
    secrets backend), else from AIRFLOW_CONN_<ID> (URI or JSON form), read without importing Airflow."""
    if "airflow" in sys.modules:
        try:
            from airflow.sdk import BaseHook

            return BaseHook.get_connection(conn_id).get_uri()
        except Exception:  # noqa: BLE001 - not in a task context: fall back to the environment
            pass
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        from saturn_airflow.errors import SaturnInputError

        raise SaturnInputError(f"[saturn] store_conn_id={conn_id!r}: no such Airflow connection "
                               f"(set AIRFLOW_CONN_{conn_id.upper()} or define it in Airflow)")
    raw = raw.strip()
    if raw.startswith("{"):
        import json
        from urllib.parse import quote

        c = json.loads(raw)
        scheme = {"postgres": "postgresql"}.get(c.get("conn_type", ""), c.get("conn_type", ""))
        auth = quote(c.get("login") or "", safe="") + (":" + quote(c.get("password") or "", safe="") if c.get("password") else "")
        host = (c.get("host") or "") + (f":{c['port']}" if c.get("port") else "")
        return f"{scheme}://{auth + '@' if auth else ''}{host}/{c.get('schema') or ''}"
    return raw


def checkpoint_url() -> str:
    return get("checkpoint_url")


def checkpoint_every_s() -> float:
    return get_float("checkpoint_every_s")


def lease_ttl_s() -> float:
    return get_float("lease_ttl_s")


def node() -> str:
    """The node this worker serves ([saturn] node), or "" when it is not pinned to one."""
    return get("node").strip()


def device_ids() -> Optional[list[int]]:
    """This worker's device ids ([saturn] device_ids, e.g. "0,1" or "4-7"), or None for every device."""
    raw = get("device_ids").strip()
    if not raw:
        return None
    ids: list[int] = []
    try:
        for part in raw.replace(" ", "").split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                ids.extend(range(int(lo), int(hi) + 1))
            elif part:
                ids.append(int(part))
    except ValueError:
        from saturn_airflow.errors import SaturnInputError

        raise SaturnInputError(f"[saturn] device_ids={raw!r}: expected comma-separated ids or ranges, e.g. 0,1 or 4-7") from None
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        from saturn_airflow.errors import SaturnInputError

        raise SaturnInputError(f"[saturn] device_ids={raw!r}: ids must be distinct and >= 0")
    return ids


def nodes() -> list[str]:
    """The cluster's node names that have a worker each ([saturn] nodes); [] on one machine."""
    return [n.strip() for n in get("nodes").split(",") if n.strip()]


def solver() -> str:
    return get("solver")


def time_limit() -> float:
    return get_float("time_limit")


def drift_threshold() -> float:
    return get_float("drift_threshold")


def drift_min_s() -> float:
    return get_float("drift_min_s")


def drift_poll_s() -> float:
    return get_float("drift_poll_s")


def restart_overhead_s() -> float:
    return get_float("restart_overhead_s")


def pool_name(node: str) -> str:
    """The Airflow pool of a cluster node (one slot per GPU)."""
    return f"{get('pool_prefix')}{node}"
