"""The one rule for names that become store paths, DAG ids, task ids, pool names and lease keys.

Workload, job and node names (in workloads, profile tables and plans alike) and plan ids follow it,
so `a/../../b` can never reach the filesystem or the Airflow metadata as a path.
"""

from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_NAME_LEN = 200
RULE = f"must start with a letter or digit and hold only letters, digits, '-', '_', '.' (at most {MAX_NAME_LEN})"


def check_name(kind: str, value: str) -> str:
    """`value` when it follows the rule; ValueError naming `kind` ("job name", "node name", ...) otherwise."""
    if not isinstance(value, str) or not NAME.match(value) or len(value) > MAX_NAME_LEN:
        raise ValueError(f"{kind} {value!r} {RULE}")
    return value
