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
    "store_url": "",             # empty: $SATURN_HOME, else $AIRFLOW_HOME/saturn (store.default_store_url)
    "solver": "highs",
    "time_limit": "30",          # a ceiling: planning returns once the plan is optimal or within gap_tolerance
    "gap_tolerance": "0.01",     # a plan within 1% of the lower bound is good enough to stop solving
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
    """$SATURN_HOME, else [saturn] store_url, else store.py's default ($AIRFLOW_HOME/saturn)."""
    from saturn_airflow.store.files import default_store_url

    return os.environ.get("SATURN_HOME") or get("store_url") or default_store_url()


def solver() -> str:
    return get("solver")


def time_limit() -> float:
    return get_float("time_limit")


def gap_tolerance() -> float:
    return get_float("gap_tolerance")


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
