"""The provider's `[saturn]` settings: each option declared once, read lazily.

An option is read from the environment first (AIRFLOW__SATURN__<OPTION>, Airflow's own convention, so
the same variable also feeds `airflow config get-value saturn <option>`), then from Airflow's config,
then its declared default. Airflow's config is consulted only when Airflow is already imported in this
process (a task, the scheduler, the dag-processor): the engine and the CLI never pay for importing
Airflow, and never create an airflow.cfg by accident.

`OPTIONS` below is the only list of options: the typed accessors (`settings.solver()`, ...) and the
provider's config section (`provider_info.get_provider_info()`) are both derived from it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # Airflow's config types: string | float | integer | boolean
    default: str
    description: str
    example: str

    def parse(self, raw: str) -> Any:
        """The typed value of `raw`; a malformed value falls back to the default (never break a task)."""
        try:
            return _PARSERS[self.type](raw)
        except ValueError:
            return _PARSERS[self.type](self.default)


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str, "float": float, "integer": lambda s: int(float(s)), "boolean": _parse_bool}

OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("store_url", "string", "",
           "The store folder (local path or fsspec URL): checkpoints, and the SQLite record database when "
           "store_db is empty. Default: $SATURN_HOME, else $AIRFLOW_HOME/saturn.", "/shared/saturn"),
    Option("store_db", "string", "",
           "SQLAlchemy URL of the record database (plans, progress, leases, claims, events). Empty: a SQLite "
           "file saturn.db in store_url (one machine). A cluster uses PostgreSQL.",
           "postgresql://saturn:pw@db-host:5432/saturn"),
    Option("store_conn_id", "string", "",
           "An Airflow connection holding the record database (used when store_db is empty).", "saturn_db"),
    Option("checkpoint_url", "string", "",
           "Folder or fsspec URL every node reaches, for the jobs' checkpoints (torch.distributed.checkpoint). "
           "Empty: <store_url>/checkpoints.", "s3://bucket/saturn/checkpoints"),
    Option("checkpoint_every_s", "float", "60",
           "A running job checkpoints this often (seconds): the most a killed worker or node loses of it.", "300"),
    Option("lease_ttl_s", "float", "60",
           "A device or job lease expires when its holder has not heartbeated for this long (seconds); one "
           "waiter then breaks it.", "120"),
    Option("node", "string", "",
           "The node this worker serves (set per worker, the worker consuming the queue of the same name). "
           "Empty: not pinned to a node.", "gpu-a"),
    Option("device_ids", "string", "",
           "The device ids of this worker's node: CUDA ordinals as the worker sees them, or CPU core indexes; "
           "comma-separated, ranges allowed. Plan device i runs on the i-th. Empty: every device of the machine.",
           "0-3"),
    Option("nodes", "string", "",
           "The cluster's node names that have a worker each: the planning DAG profiles node N in queue N. "
           "Empty: one profile task per workload node on the default queue.", "gpu-a,gpu-b"),
    Option("solver", "string", "highs", "Default MILP solver: highs or cbc.", "cbc"),
    Option("time_limit", "float", "30", "Default solver time limit in seconds (a ceiling, not a target).", "60"),
    Option("gap_tolerance", "float", "0.01",
           "Planning stops once its plan is within this fraction of the lower bound (small sweeps are solved "
           "to proven optimality regardless).", "0.02"),
    Option("profile_strategy", "string", "guided",
           "guided: measure each job's smallest device count that fits, then only the larger counts that could "
           "shorten the plan by more than gap_tolerance and their own cost; full: measure every config.", "full"),
    Option("drift_threshold", "float", "0.1",
           "Re-plan when the projected makespan moves past this fraction of the plan's...", "0.2"),
    Option("drift_min_s", "float", "60", "...and past this many seconds.", "120"),
    Option("drift_poll_s", "float", "5", "How often the drift trigger reads the progress records (seconds).", "10"),
    Option("drift_warmup_s", "float", "10",
           "A launch's first steps during this many seconds (or its profiled warm-up, if longer) never count "
           "toward its rate.", "20"),
    Option("drift_window_s", "float", "5", "A job's rate is measured over at least this many seconds of its "
           "steady phase...", "10"),
    Option("drift_window_steps", "integer", "10", "...and at least this many steps.", "20"),
    Option("drift_checks", "integer", "2",
           "Re-plan only when this many consecutive drift looks (spanning at least one rate window) are late.", "3"),
    Option("restart_overhead_s", "float", "10",
           "What a preempted job pays to restart (process launch, checkpoint load), in seconds.", "30"),
    Option("min_preempt_gain", "float", "0.05",
           "A re-plan preempts running jobs only when that shortens the makespan by this fraction.", "0.1"),
    Option("max_replans", "integer", "5", "Drift re-plans allowed in one plan lineage.", "2"),
    Option("rung_time_limit", "float", "5",
           "Solver time limit of a rung re-plan (successive halving): few jobs remain, and freed devices wait "
           "for it (seconds).", "10"),
    Option("pool_prefix", "string", "saturn_", "The pool of cluster node N is <pool_prefix>N (one slot per GPU).",
           "gpu_"),
    Option("manage_pools", "boolean", "true",
           "Create/resize the node pools from the planning DAG (REST API, connection saturn_api).", "false"),
    Option("lease_timeout_s", "float", "3600", "How long a training task waits for its devices' leases (seconds).",
           "7200"),
    Option("render_max_plans", "integer", "200", "The factory DAG file renders the newest N plan versions.", "50"),
    Option("mlflow_tracking_uri", "string", "",
           "Track every sweep in MLflow (a parent run per sweep, a child run per job, the exported models as "
           "artifacts); empty: off. Needs the mlflow extra.", "http://127.0.0.1:5000"),
    Option("mlflow_experiment", "string", "", "The MLflow experiment sweeps are tracked in; empty: the workload's name.",
           "sweeps"),
)}

DEFAULTS: dict[str, str] = {name: o.default for name, o in OPTIONS.items()}


def _from_airflow(option: str) -> Optional[str]:
    if "airflow" not in sys.modules:
        return None
    try:
        from airflow.configuration import conf  # noqa: TID251 (only when Airflow is already loaded)

        if conf.has_option("saturn", option):
            value = conf.get("saturn", option)
            return None if value is None else str(value)
    except Exception:  # pragma: no cover - a broken config must not break the engine
        return None
    return None


def get(option: str) -> str:
    """One option as a string: AIRFLOW__SATURN__<OPTION>, else Airflow's [saturn] option, else the default."""
    declared = OPTIONS[option]  # KeyError for an undeclared option: declare it above
    env = os.environ.get(f"AIRFLOW__SATURN__{option.upper()}")
    if env is not None:
        return env
    value = _from_airflow(option)
    if value not in (None, ""):
        return value
    return declared.default


def value(option: str) -> Any:
    """One option, typed as declared."""
    return OPTIONS[option].parse(get(option))


def _accessor(option: str) -> Callable[[], Any]:
    def read() -> Any:
        return value(option)

    read.__name__ = option
    read.__doc__ = OPTIONS[option].description
    return read


solver = _accessor("solver")
time_limit = _accessor("time_limit")
gap_tolerance = _accessor("gap_tolerance")
profile_strategy = _accessor("profile_strategy")
drift_threshold = _accessor("drift_threshold")
drift_min_s = _accessor("drift_min_s")
drift_poll_s = _accessor("drift_poll_s")
drift_warmup_s = _accessor("drift_warmup_s")
drift_window_s = _accessor("drift_window_s")
drift_window_steps = _accessor("drift_window_steps")
drift_checks = _accessor("drift_checks")
checkpoint_every_s = _accessor("checkpoint_every_s")
restart_overhead_s = _accessor("restart_overhead_s")
min_preempt_gain = _accessor("min_preempt_gain")
max_replans = _accessor("max_replans")
pool_prefix = _accessor("pool_prefix")
manage_pools = _accessor("manage_pools")
lease_timeout_s = _accessor("lease_timeout_s")
render_max_plans = _accessor("render_max_plans")
rung_time_limit = _accessor("rung_time_limit")
checkpoint_url = _accessor("checkpoint_url")
lease_ttl_s = _accessor("lease_ttl_s")


def mlflow_tracking_uri() -> str:
    """Where sweeps are tracked in MLflow; empty (the default) turns tracking off."""
    return get("mlflow_tracking_uri").strip()


def mlflow_experiment(workload: str) -> str:
    return get("mlflow_experiment").strip() or workload


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
            from airflow.sdk import BaseHook  # noqa: TID251 (only when Airflow is already loaded)

            return BaseHook.get_connection(conn_id).get_uri()
        except Exception:  # noqa: BLE001 - not in a task context: fall back to the environment
            pass
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        from saturn_airflow.errors import SaturnInputError

        raise SaturnInputError(f"[saturn] store_conn_id={conn_id!r}: no such Airflow connection "
                               f"(set AIRFLOW_CONN_{conn_id.upper()} or define it in Airflow)")
    raw = raw.strip()
    if not raw.startswith("{"):
        return raw
    import json
    from urllib.parse import quote

    c = json.loads(raw)
    scheme = {"postgres": "postgresql"}.get(c.get("conn_type", ""), c.get("conn_type", ""))
    auth = quote(c.get("login") or "", safe="") + (":" + quote(c["password"], safe="") if c.get("password") else "")
    host = (c.get("host") or "") + (f":{c['port']}" if c.get("port") else "")
    return f"{scheme}://{auth + '@' if auth else ''}{host}/{c.get('schema') or ''}"


def node() -> str:
    """The node this worker serves ([saturn] node), or "" when it is not pinned to one."""
    return get("node").strip()


def device_ids() -> Optional[list[int]]:
    """This worker's device ids ([saturn] device_ids, e.g. "0,1" or "4-7"), or None for every device."""
    from saturn_airflow.errors import SaturnInputError

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
        raise SaturnInputError(f"[saturn] device_ids={raw!r}: expected comma-separated ids or ranges, e.g. 0,1 or 4-7") from None
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        raise SaturnInputError(f"[saturn] device_ids={raw!r}: ids must be distinct and >= 0")
    return ids


def nodes() -> list[str]:
    """The cluster's node names that have a worker each ([saturn] nodes); [] on one machine."""
    return [n.strip() for n in get("nodes").split(",") if n.strip()]


def pool_name(node: str) -> str:
    """The Airflow pool of a cluster node (one slot per GPU)."""
    return f"{pool_prefix()}{node}"


def provider_config() -> dict:
    """The `[saturn]` section as Airflow's provider metadata declares config options."""
    return {"description": "saturn-airflow provider settings.",
            "options": {o.name: {"description": o.description, "version_added": "0.1.0", "type": o.type,
                                 "example": o.example, "default": o.default} for o in OPTIONS.values()}}
