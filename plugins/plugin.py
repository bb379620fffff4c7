"""SaturnPlugin: the plan Gantt view in the Airflow 3 UI (registered by the `airflow.plugins` entry point).

A FastAPI app at /saturn (plugins/app.py) serves the pages and a JSON API behind Airflow auth; two
external views embed it: a nav entry (Browse > Saturn plans) and a tab on every DAG, which shows the
chart of the plan whose DAG it is (or the plan list, e.g. on the planning DAG). Tabs need url_route.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from saturn_airflow.plugins.app import app

URL_PREFIX = "/saturn"


class SaturnPlugin(AirflowPlugin):
    name = "saturn"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Saturn plans"}]
    external_views = [
        {"name": "Saturn plans", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "browse",
         "url_route": "saturn"},
        {"name": "Saturn plan", "href": f"{URL_PREFIX}/?dag_id={{DAG_ID}}", "destination": "dag",
         "url_route": "saturn-plan"},
    ]
