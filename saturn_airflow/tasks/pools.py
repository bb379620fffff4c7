"""One Airflow pool per node, one slot per GPU (device): the specs and the REST calls that create them.

Airflow 3 blocks metadata-DB access from task code, so pools are made through the public REST API
(/api/v2/pools) with a plain HTTP client; the engine stays free of Airflow imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from saturn_airflow import settings
from saturn_airflow.errors import AirflowApiError

def pool_specs(nodes: list[dict]) -> list[dict]:
    """One Airflow pool per node, one slot per GPU (device)."""
    return [{"name": settings.pool_name(n["name"]), "slots": int(n["gpus"]),
             "description": f"saturn: GPUs of node {n['name']} ({n['gpus']} x {n.get('gpu_type') or 'device'})",
             "include_deferred": False} for n in nodes]


def pools_import_file(nodes: list[dict], path: str) -> str:
    """Write the pools of `nodes` in the format of `airflow pools import`."""
    data = {p["name"]: {"slots": p["slots"], "description": p["description"], "include_deferred": p["include_deferred"]}
            for p in pool_specs(nodes)}
    Path(path).write_text(json.dumps(data, indent=1))
    return path


def ensure_pools_rest(base_url: str, nodes: list[dict], *, login: Optional[str] = None, password: Optional[str] = None,
                      token: Optional[str] = None, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Create or resize each node's pool through Airflow's public REST API (/api/v2/pools).

    Airflow 3 blocks metadata-DB access from task code, so the REST API is the supported way; the
    credentials come from the `saturn_api` connection (see docs/airflow.md).
    """
    import httpx  # installed with Airflow; only this step needs it

    base = base_url.rstrip("/")
    with httpx.Client(base_url=base, timeout=30) as client:
        if token is None and login:
            r = client.post("/auth/token", json={"username": login, "password": password or ""})
            if r.status_code >= 400:
                raise AirflowApiError(f"Airflow API login as {login!r} at {base} failed: {r.status_code} {r.text[:200]}")
            token = r.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        done = []
        for p in pool_specs(nodes):
            r = client.get(f"/api/v2/pools/{p['name']}", headers=headers)
            if r.status_code in (401, 403):
                raise AirflowApiError(f"Airflow API at {base} refused pool access ({r.status_code}); set the "
                                   "'saturn_api' connection (login/password of a user allowed to edit pools)")
            body = {"name": p["name"], "slots": p["slots"], "description": p["description"],
                    "include_deferred": p["include_deferred"]}
            if r.status_code == 404:
                r = client.post("/api/v2/pools", json=body, headers=headers)
                action = "created"
            elif r.status_code == 200 and (r.json().get("slots") != p["slots"]):
                r = client.patch(f"/api/v2/pools/{p['name']}", json=body, headers=headers)
                action = "resized"
            else:
                action = "exists"
            if r.status_code >= 400:
                raise AirflowApiError(f"pool {p['name']}: {r.status_code} {r.text[:300]}")
            log(f"pool {p['name']}: {action} ({p['slots']} slots)")
            done.append({**p, "action": action})
        return done
