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
           "Where plans, progress and checkpoints live: a local folder or an fsspec URL (s3://, gs://). "
           "Default: $SATURN_HOME, else $AIRFLOW_HOME/saturn.", "s3://bucket/saturn"),
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
    Option("checkpoint_every_s", "float", "60",
           "How often a training job checkpoints (wall seconds); a fault loses at most this much work.", "300"),
    Option("restart_overhead_s", "float", "10",
           "What a preempted job pays to restart (process launch, checkpoint load), in seconds.", "30"),
    Option("min_preempt_gain", "float", "0.05",
           "A re-plan preempts running jobs only when that shortens the makespan by this fraction.", "0.1"),
    Option("max_replans", "integer", "5", "Re-plans allowed in one plan lineage.", "2"),
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


def mlflow_tracking_uri() -> str:
    """Where sweeps are tracked in MLflow; empty (the default) turns tracking off."""
    return get("mlflow_tracking_uri").strip()


def mlflow_experiment(workload: str) -> str:
    return get("mlflow_experiment").strip() or workload


def store_url() -> str:
    """$SATURN_HOME, else [saturn] store_url, else $AIRFLOW_HOME/saturn."""
    from saturn_airflow.store.files import default_store_url

    return os.environ.get("SATURN_HOME") or get("store_url") or default_store_url()


def pool_name(node: str) -> str:
    """The Airflow pool of a cluster node (one slot per GPU)."""
    return f"{pool_prefix()}{node}"


def provider_config() -> dict:
    """The `[saturn]` section as Airflow's provider metadata declares config options."""
    return {"description": "saturn-airflow provider settings.",
            "options": {o.name: {"description": o.description, "version_added": "0.1.0", "type": o.type,
                                 "example": o.example, "default": o.default} for o in OPTIONS.values()}}
