"""Run in a fresh process with its own AIRFLOW_HOME: build the real api-server app (plugins mounted
from the entry point), then hit /saturn with no, bad and real tokens. Prints one JSON line."""

from __future__ import annotations

import json
import sys

from airflow.utils import db

db.initdb()

from fastapi.testclient import TestClient  # noqa: E402

from airflow.api_fastapi.app import create_app, get_auth_manager  # noqa: E402
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser  # noqa: E402

plan_id = sys.argv[1]
app = create_app("core")
am = get_auth_manager()
admin = am.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
viewer = am.generate_jwt(SimpleAuthManagerUser(username="v", role="viewer"))
nobody = am.generate_jwt(SimpleAuthManagerUser(username="n", role=None))
out = {}
with TestClient(app) as c:
    for path in ("/saturn/", "/saturn/api/plans", f"/saturn/api/plans/{plan_id}", f"/saturn/plan?plan_id={plan_id}"):
        out[path] = {
            "none": c.get(path).status_code,
            "bad_bearer": c.get(path, headers={"Authorization": "Bearer not.a.jwt"}).status_code,
            "bad_cookie": c.get(path, cookies={"_token": "not.a.jwt"}).status_code,
            "no_role": c.get(path, headers={"Authorization": f"Bearer {nobody}"}).status_code,
            "viewer": c.get(path, headers={"Authorization": f"Bearer {viewer}"}).status_code,
            "admin_cookie": c.get(path, cookies={"_token": admin}).status_code,
        }
    page = c.get(f"/saturn/plan?plan_id={plan_id}", headers={"Authorization": f"Bearer {admin}"}).text
    out["bars"] = page.count('class="bar planned"')
    plugins = c.get("/api/v2/plugins", headers={"Authorization": f"Bearer {admin}"}).json()
    out["plugins"] = [p for p in plugins["plugins"] if p["name"] == "saturn"]
    out["import_errors"] = c.get("/api/v2/plugins/importErrors", headers={"Authorization": f"Bearer {admin}"}).json()
    out["api"] = c.get("/saturn/api/plans", headers={"Authorization": f"Bearer {admin}"}).json()
print("RESULT " + json.dumps(out))
