"""The plugin's FastAPI app (mounted at /saturn by the api-server): plan pages and a JSON API.

It only translates: plans and progress come from the stores, the chart from
saturn_airflow.views.gantt_html, the leaderboard and metric curves from saturn_airflow.views.leaderboard
and leaderboard_html. Plugin apps are open by default, so every route depends on `authorize`, which runs Airflow's own `get_user` (Bearer JWT or the UI's `_token` cookie, checked by the configured
auth manager) and then asks that auth manager whether the user may read the plan's DAG.
Airflow's API modules are imported lazily: the scheduler and DAG processor load this plugin too.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from saturn_airflow import settings

from saturn_airflow.views import gantt_html
from saturn_airflow.spec.plan import Plan
from saturn_airflow.tasks.render import dag_id as plan_dag_id, plan_id_of
from saturn_airflow.store.records import PlanStore, ProgressStore, Store
from saturn_airflow.views.leaderboard import leaderboard
from saturn_airflow.views.leaderboard_html import render_results

REFRESH_S = 15


def plan_for_dag(dag_id: str, plan_ids: list[str]) -> Optional[str]:
    """The plan whose DAG this is (dags/saturn_plans.py names them render.dag_id(plan_id))."""
    pid = plan_id_of(dag_id)
    return pid if dag_id == plan_dag_id(pid) and pid in plan_ids else None


def store() -> Store:
    """The provider's store ([saturn] store_url, AIRFLOW__SATURN__STORE_URL, $SATURN_HOME, ...)."""
    return Store(settings.store_url())


async def authorize(request: Request) -> Any:
    """401 without credentials, 403 for a bad token or a user who may not read the plan's DAG."""
    from fastapi.security import HTTPAuthorizationCredentials

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user

    creds = None
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme and token:
        creds = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
    user = await get_user(request, None, creds)
    pid = request.path_params.get("plan_id") or request.query_params.get("plan_id")
    dag_id = request.query_params.get("dag_id") or (plan_dag_id(pid) if pid else None)
    team = None
    if dag_id:
        from airflow.configuration import conf

        if conf.getboolean("core", "multi_team", fallback=False):
            from airflow.models.dag import DagModel

            team = DagModel.get_team_name(dag_id)
    if not get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id, team_name=team), user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    return user


app = FastAPI(title="Saturn plans", dependencies=[Depends(authorize)], docs_url=None, redoc_url=None,
              openapi_url=None)


def _latest_per_workload(plans: list[Plan], ps: PlanStore) -> list[Plan]:
    """The newest plan of each workload that nothing superseded."""
    live = [p for p in plans if not ps.superseded_by(p.plan_id)] or plans
    latest: dict[str, Plan] = {}
    for p in sorted(live, key=lambda p: (p.created_at, p.plan_id)):
        latest[p.workload] = p
    return sorted(latest.values(), key=lambda p: (p.created_at, p.plan_id), reverse=True)


def _newest_descendant(ps: PlanStore, plan_id: str) -> str:
    seen = {plan_id}
    while (nxt := ps.superseded_by(plan_id)) and nxt not in seen:
        seen.add(nxt)
        plan_id = nxt
    return plan_id


def _resolve(ps: PlanStore, plan_id: Optional[str], dag_id: Optional[str]) -> tuple[list[Plan], str]:
    """(lineage up to the asked plan, the asked plan id); 404 when there is none."""
    ids = ps.ids()
    if not plan_id and dag_id:
        plan_id = plan_for_dag(dag_id, ids)
        if plan_id is None:
            raise HTTPException(404, f"DAG {dag_id} is not a Saturn plan DAG")
    if not plan_id:
        raise HTTPException(404, "give plan_id or dag_id")
    if plan_id not in ids:
        raise HTTPException(404, f"no plan {plan_id}")
    return ps.lineage(plan_id), plan_id


_CONTEXT: dict[str, tuple[Any, Optional[float]]] = {}


def _context(lineage: list[Plan]) -> tuple[Any, Optional[float]]:
    """Cluster and current-practice makespan of a lineage, cached by root plan (plans are immutable)."""
    root = lineage[0].plan_id
    if root not in _CONTEXT:
        got = gantt_html.store_context(store(), lineage)
        if got[0] is None:  # the table may not be there yet: ask again next time
            return got
        _CONTEXT[root] = got
    return _CONTEXT[root]


_TABLES: dict[str, Any] = {}


def _table(lineage: list[Plan]) -> Any:
    """The lineage's profile table (the projection's profiled step times, as the drift watch uses them)."""
    root = lineage[0].plan_id
    if root not in _TABLES:
        table = gantt_html.lineage_table(store(), lineage)
        if table is None:
            return None
        _TABLES[root] = table
    return _TABLES[root]


def _board(st: Store, lineage: list[Plan]):
    """The leaderboard of a lineage's jobs (every version's: a re-plan lists only what remained)."""
    jobs: list[str] = []
    for p in lineage:
        jobs += [a.job for a in p.assignments if a.job not in jobs]
    return leaderboard(st, lineage[-1].workload, lineage[-1].sweep, jobs)


def _results_html(lineage: list[Plan]) -> str:
    """The leaderboard, then (a sweep with successive halving) each job's values at the rungs."""
    if not lineage:
        return ""
    from saturn_airflow.store.metrics import MetricsStore
    from saturn_airflow.views.halving_html import render_halving

    st = store()
    sweep = lineage[-1].sweep
    halving = render_halving(lineage, ProgressStore(st, sweep=sweep).all(lineage[-1].workload),
                             MetricsStore(st, sweep=sweep).all(lineage[-1].workload))
    return render_results(_board(st, lineage)) + halving


def _page(plan_id: Optional[str], dag_id: Optional[str], latest: bool) -> tuple[list[Plan], dict, Any]:
    st = store()
    ps = PlanStore(st)
    lineage, pid = _resolve(ps, plan_id, dag_id)
    if latest:  # follow re-plans forward so an old DAG's tab shows what happened next
        lineage = ps.lineage(_newest_descendant(ps, pid))
    progress = ProgressStore(st, sweep=lineage[-1].sweep).all(lineage[-1].workload)
    return lineage, progress, pid


@app.get("/", response_class=HTMLResponse)
def index(dag_id: Optional[str] = None, plan_id: Optional[str] = None) -> HTMLResponse:
    """Nav page: the plan of a DAG when asked, else the newest lineage of every workload."""
    ps = PlanStore(store())
    if plan_id or (dag_id and plan_for_dag(dag_id, ps.ids())):
        return plan_page(plan_id=plan_id, dag_id=dag_id, latest=True)
    st = ps.store
    entries, newest = [], None
    for p in _latest_per_workload(list(ps.plans()), ps):
        lineage = ps.lineage(p.plan_id)
        progress = ProgressStore(st, sweep=p.sweep).all(p.workload)
        sw = gantt_html.chart_data(lineage, progress)["sweep"]
        entries.append({"workload": p.workload, "plan_id": p.plan_id, "versions": len(lineage),
                        "makespan_s": lineage[0].makespan_s, "created_at": lineage[0].created_at,
                        "jobs": sw["jobs"], "jobs_done": sw["jobs_done"], "href": f"plan?plan_id={p.plan_id}"})
        if newest is None:  # the most recent lineage's chart under the list
            cluster, baseline = _context(lineage)
            newest = gantt_html.page_body(gantt_html.render_html(
                lineage, progress, baseline, cluster=cluster, table=_table(lineage),
                dag_urls={q.plan_id: f"/dags/{plan_dag_id(q.plan_id)}" for q in lineage},
                extra_html=_results_html(lineage)))
    return HTMLResponse(gantt_html.render_index(entries, newest))


@app.get("/plan", response_class=HTMLResponse)
def plan_page(plan_id: Optional[str] = None, dag_id: Optional[str] = None,
              latest: bool = Query(True, description="follow re-plans to the newest version")) -> HTMLResponse:
    lineage, progress, _ = _page(plan_id, dag_id, latest)
    cluster, baseline = _context(lineage)
    running = any(r and r.get("state") == "running" for r in progress.values())
    urls = {p.plan_id: f"/dags/{plan_dag_id(p.plan_id)}" for p in lineage}
    return HTMLResponse(gantt_html.render_html(lineage, progress, baseline, cluster=cluster, dag_urls=urls, table=_table(lineage),
                                               refresh_s=REFRESH_S if running else None,
                                               extra_html=_results_html(lineage)))


@app.get("/api/plans")
def list_plans() -> JSONResponse:
    ps = PlanStore(store())
    out = [{"plan_id": p.plan_id, "workload": p.workload, "parent_plan_id": p.parent_plan_id,
            "created_at": p.created_at, "makespan_s": p.makespan_s, "lower_bound_s": p.lower_bound_s,
            "solver": p.solver.model_dump(mode="json"), "superseded_by": ps.superseded_by(p.plan_id),
            "dag_id": plan_dag_id(p.plan_id), "jobs": len(p.assignments)} for p in ps.plans()]
    return JSONResponse({"plans": out})


@app.get("/api/plans/{plan_id}")
def plan_data(plan_id: str, latest: bool = False) -> JSONResponse:
    """What the chart draws (lanes, planned and actual slots, makespans, lineage) as JSON."""
    lineage, progress, _ = _page(plan_id, None, latest)
    cluster, baseline = _context(lineage)
    return JSONResponse(gantt_html.chart_data(lineage, progress, baseline, cluster=cluster, table=_table(lineage)))


@app.get("/api/plans/{plan_id}/results")
def plan_results(plan_id: str) -> JSONResponse:
    """The leaderboard of the plan's sweep (the whole lineage, re-plans followed) as JSON."""
    ps = PlanStore(store())
    lineage, pid = _resolve(ps, plan_id, None)
    lineage = ps.lineage(_newest_descendant(ps, pid))
    return JSONResponse(_board(ps.store, lineage).to_dict())
