"""The plan Gantt chart as one self-contained HTML page (inline SVG and CSS, no script, no CDN).

Why here and not in the plugin: the same page serves `saturn show --html` for users without Airflow
and the Airflow UI tab, so all chart logic lives in the engine and the plugin only fetches plans and
progress records and hands them over. No Airflow import.

Layout: one lane per GPU of each node; in each lane the upper half holds the planned slot of every
job using that GPU and the lower half the actual slot from the progress records, colored by state.
Every bar carries data-* attributes (plan, job, node, gpu, kind) so tests can check it in a DOM.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import math
import time
from typing import Any, Iterable, Optional

from saturn_airflow.spec.plan import Plan
from saturn_airflow.spec.progress import JobState

STATE_COLORS = {
    JobState.DONE.value: "#2e9e5b",
    JobState.RUNNING.value: "#2f6fde",
    JobState.PREEMPTED.value: "#e69a1c",
    JobState.INTERRUPTED.value: "#c77dba",
    JobState.FAILED.value: "#d64545",
}
PENDING_COLOR = "#b8bec9"
CHART_W = 1000  # SVG user units; the SVG scales to the page width
GUTTER = 120  # lane labels
LANE_H = 28
AXIS_H = 26


# ---------------------------------------------------------------------------------------------
# Data: what the chart shows, as plain JSON-able dicts (the plugin's JSON API returns this too)
# ---------------------------------------------------------------------------------------------

def iso_to_epoch(iso: str) -> Optional[float]:
    try:
        d = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def plan_baseline(plan: Plan) -> Optional[float]:
    """A current-practice makespan the planner may have stored on the plan itself (extra keys)."""
    extra = plan.model_extra or {}
    for key in ("baseline_makespan_s", "current_practice_makespan_s"):
        if isinstance(extra.get(key), (int, float)):
            return float(extra[key])
    baselines = extra.get("baselines")
    if isinstance(baselines, dict):
        v = baselines.get("current-practice")
        if isinstance(v, dict):
            v = v.get("makespan_s")
        if isinstance(v, (int, float)):
            return float(v)
    return None


def attach_records(plans: list[Plan], progress: Optional[dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """plan_id -> {job: record}: each record goes to the newest plan holding its job, not older than
    the plan that wrote it (a job kept running across a re-plan shows on the new chart; a job
    finished before it stays on the old one). Records of plans outside `plans` are left out."""
    out: dict[str, dict[str, dict]] = {p.plan_id: {} for p in plans}
    pos = {p.plan_id: i for i, p in enumerate(plans)}
    for job, rec in (progress or {}).items():
        if not isinstance(rec, dict):
            continue
        job = rec.get("job", job)
        if rec.get("plan_id") and rec["plan_id"] not in pos:
            continue  # another lineage of the same workload (an earlier sweep)
        floor = pos.get(rec.get("plan_id"), 0)
        holders = [i for i, p in enumerate(plans) if i >= floor and any(a.job == job for a in p.assignments)]
        if holders:
            out[plans[holders[-1]].plan_id][job] = {**rec, "job": job}
    return out


def _lanes(plan: Plan, records: dict[str, dict], cluster: Any = None) -> list[tuple[str, int]]:
    """(node, gpu id) for every GPU of every node: the cluster's when given, else those the plan
    and the records use."""
    size: dict[str, int] = {}
    for n in getattr(cluster, "nodes", None) or []:
        size[n.name] = n.gpus
    for a in plan.assignments:
        size[a.node] = max(size.get(a.node, 0), max(a.gpu_ids, default=-1) + 1)
    nodes_of = {a.job: a.node for a in plan.assignments}
    for job, rec in records.items():
        node = rec.get("node") or nodes_of.get(job)
        ids = [int(g) for g in rec.get("device_ids") or [] if isinstance(g, (int, float, str)) and str(g).isdigit()]
        if node and ids:
            size[node] = max(size.get(node, 0), max(ids) + 1)
    return [(node, g) for node, n in size.items() for g in range(n)]


def _origin(plan: Plan, records: dict[str, dict]) -> float:
    """Epoch second that is t=0 of the actual run. A re-plan's t=0 is its creation (the jobs it kept
    running count their remaining time from then, and its DAG's start-up delay is real cost); a
    first plan's is the first start of one of its jobs (profiling and solving come before it)."""
    created = iso_to_epoch(plan.created_at)
    if plan.parent_plan_id and created is not None:
        return created
    starts = [float(r["started_at"]) for r in records.values()
              if r.get("plan_id") == plan.plan_id and isinstance(r.get("started_at"), (int, float))]
    if starts:
        return min(starts)
    return created if created is not None else min(
        (float(r["started_at"]) for r in records.values() if isinstance(r.get("started_at"), (int, float))),
        default=time.time())


def actual_spans(plan: Plan, records: dict[str, dict], now: float, table: Any = None) -> tuple[float, list[dict], Any]:
    """The origin, per job with a record its actual slot in plan-relative seconds, and the shared
    projection (control.projection) of the plan from that origin: the ETA of a running job and the
    projected makespan are the drift watch's, not a second estimate."""
    from saturn_airflow.control.projection import project

    origin = _origin(plan, records)
    proj = project(plan, {j: r for j, r in records.items() if isinstance(r, dict)}, now, origin, table=table)
    spans = []
    for a in plan.assignments:
        rec = records.get(a.job)
        if not rec or not isinstance(rec.get("started_at"), (int, float)):
            continue
        state = str(rec.get("state") or "running")
        start = float(rec["started_at"]) - origin
        if state == "running":
            end = max(float(rec.get("updated_at") or now), now) - origin
        else:
            end = float(rec.get("finished_at") or rec.get("updated_at") or now) - origin
        pj = proj.jobs.get(a.job)
        eta_end = pj.end_s if (state == "running" and pj is not None and pj.state == "running") else None
        ids = rec.get("device_ids") or a.gpu_ids
        spans.append({
            "job": a.job, "node": rec.get("node") or a.node, "gpu_ids": [int(g) for g in ids],
            "start_s": max(0.0, start), "end_s": max(0.0, end), "eta_end_s": eta_end, "state": state,
            "step": rec.get("step"), "total": rec.get("total"), "rate_steps_per_s": rec.get("rate_steps_per_s"),
            "recent_rate_steps_per_s": rec.get("recent_rate_steps_per_s"),
            "steady_rate_steps_per_s": pj.rate_steps_per_s if pj is not None else None,
            "parallelism": rec.get("parallelism"), "error": rec.get("error") if state in ("failed", "interrupted") else None,
        })
    return origin, spans, proj


def plan_summary(plan: Plan, spans: list[dict], baseline_s: Optional[float], proj: Any = None) -> dict:
    """Makespans side by side: lower bound, planned, actual (or projected while running), baseline."""
    jobs = {a.job for a in plan.assignments}
    done = {s["job"] for s in spans if s["state"] == "done"}
    finished = bool(jobs) and done >= jobs
    started = {s["job"] for s in spans}
    if proj is not None:  # the shared projection: every job, started or not
        ends = [p.end_s for p in proj.jobs.values()]
    else:
        ends = [s["eta_end_s"] if s["eta_end_s"] is not None else s["end_s"] for s in spans]
        ends += [a.end_s for a in plan.assignments if a.job not in started]
    actual = max((s["end_s"] for s in spans), default=None) if finished else None
    projected = None if finished or not spans else max(ends, default=None)
    failed = {s["job"]: s.get("error") or "failed" for s in spans if s["state"] == "failed"}
    return {
        "plan_id": plan.plan_id,
        "planned_makespan_s": plan.makespan_s,
        "lower_bound_s": plan.lower_bound_s,
        "baseline_makespan_s": baseline_s,
        "actual_makespan_s": actual,
        "projected_makespan_s": projected,
        "jobs": len(jobs), "jobs_done": len(done & jobs),
        "states": {st: sum(1 for s in spans if s["state"] == st) for st in sorted({s["state"] for s in spans})},
        "failed": failed,
    }


def chart_data(plans: list[Plan], progress: Optional[dict[str, dict]] = None,
               baseline_makespan_s: Optional[float] = None, *, cluster: Any = None,
               now: Optional[float] = None, table: Any = None) -> dict:
    """Everything the page draws, as JSON-able data (the plugin's JSON API; tests). `table`: the
    lineage's profile table (profiled step times for the projection, as the drift watch uses)."""
    now = time.time() if now is None else now
    attached = attach_records(plans, progress)
    # a node of CPU devices (no GPU on the machine) labels its lanes "cpu N"
    kinds = {n.name: "cpu" if n.gpu_type == "cpu" else "gpu" for n in getattr(cluster, "nodes", None) or []}
    out = []
    for i, p in enumerate(plans):
        recs = attached[p.plan_id]
        origin, spans, proj = actual_spans(p, recs, now, table)
        base = (baseline_makespan_s if baseline_makespan_s is not None else plan_baseline(p)) if i == 0 else None
        out.append({
            "version": i + 1, "plan_id": p.plan_id, "parent_plan_id": p.parent_plan_id,
            "reason": (p.model_extra or {}).get("reason"), "created_at": p.created_at,
            "solver": p.solver.model_dump(mode="json"),
            "lanes": [{"node": n, "gpu": g, "kind": kinds.get(n, "gpu")} for n, g in _lanes(p, recs, cluster)],
            "origin_epoch_s": origin, "actual": spans,
            "summary": plan_summary(p, spans, base, proj),
            "plan": p.model_dump(mode="json"),
        })
    return {"workload": plans[-1].workload if plans else None, "now": now, "plans": out,
            "sweep": sweep_summary(out, attached, baseline_makespan_s)}


def sweep_summary(plan_ds: list[dict], attached: dict[str, dict[str, dict]],
                  baseline_s: Optional[float]) -> Optional[dict]:
    """The whole sweep across re-plans: v1's bound and plan against the real end of the last job,
    measured from v1's first start (what current practice would be compared with)."""
    if not plan_ds:
        return None
    first, last = plan_ds[0], plan_ds[-1]
    origin = first["origin_epoch_s"]
    recs = [r for per in attached.values() for r in per.values()]
    jobs = {a["job"] for p in plan_ds for a in p["plan"]["assignments"]}
    done = {r.get("job") for r in recs if r.get("state") == "done"}
    finished = bool(jobs) and done >= jobs
    ends = [float(r.get("finished_at") or r.get("updated_at") or 0) for r in recs if r.get("state") == "done"]
    lsm = last["summary"]
    shift = last["origin_epoch_s"] - origin
    if baseline_s is None:
        baseline_s = next((p["summary"]["baseline_makespan_s"] for p in plan_ds
                           if p["summary"]["baseline_makespan_s"] is not None), None)
    return {
        "planned_makespan_s": first["plan"]["makespan_s"],
        "lower_bound_s": first["plan"]["lower_bound_s"],
        "baseline_makespan_s": baseline_s,
        "actual_makespan_s": (max(ends) - origin) if finished and ends else None,
        "projected_makespan_s": None if finished or lsm["projected_makespan_s"] is None
        else shift + lsm["projected_makespan_s"],
        "jobs": len(jobs), "jobs_done": len(done & jobs),
        "states": {st: sum(1 for r in recs if r.get("state") == st)
                   for st in sorted({str(r.get("state")) for r in recs})},
        "replans": len(plan_ds) - 1,
        "failed": {j: why for p in plan_ds for j, why in p["summary"]["failed"].items() if j not in done},
    }


def lineage_table(store: Any, plans: list[Plan]) -> Any:
    """The profile table a lineage was planned from (its root's `table_ref`), or None when missing."""
    if not plans:
        return None
    try:
        from saturn_airflow.tasks.planning import plan_table_of

        return plan_table_of(store, plans[0])
    except Exception:  # noqa: BLE001 - a missing or unreadable table only costs the extras
        return None


def store_context(store: Any, plans: list[Plan]) -> tuple[Any, Optional[float]]:
    """(cluster, current-practice makespan) of a lineage from its root plan's profile table in the
    store (`table_ref`), or (None, None) when that table is missing: the chart then draws the GPUs
    the plans use and leaves the baseline out. Imports the planner lazily (pyomo is slow to import)."""
    if not plans:
        return None, None
    root = plans[0]
    table = lineage_table(store, plans)
    if table is None:
        return None, plan_baseline(root)
    base = plan_baseline(root)
    if base is None:
        try:
            from saturn_airflow.planner import plan_table

            base = plan_table(table, baseline="current-practice", workload=root.workload).makespan_s
        except Exception:  # noqa: BLE001
            base = None
    return table.cluster, base


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def fmt_s(s: Optional[float]) -> str:
    """Seconds as a short duration: 42s, 12m05s, 3h04m."""
    if s is None or not math.isfinite(s):
        return "-"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s" if s >= 10 or s == int(s) else f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def job_color(job: str) -> str:
    """A stable, distinct-enough hue per job name."""
    h = int(hashlib.sha1(job.encode()).hexdigest()[:6], 16) % 360
    return f"hsl({h},55%,72%)"


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400):
        if span / step <= 10:
            return step
    return 86400 * math.ceil(span / 86400 / 10)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _gantt_svg(plan_d: dict, now_rel: Optional[float]) -> str:
    plan = plan_d["plan"]
    lanes = [(l["node"], l["gpu"]) for l in plan_d["lanes"]]
    kind = {(l["node"], l["gpu"]): l.get("kind", "gpu") for l in plan_d["lanes"]}
    spans = plan_d["actual"]
    horizon = max([plan["makespan_s"], 1e-9] + [s["end_s"] for s in spans]
                  + [s["eta_end_s"] for s in spans if s["eta_end_s"] is not None])
    horizon *= 1.02
    plot_w = CHART_W - GUTTER - 10
    x = lambda t: GUTTER + plot_w * max(0.0, t) / horizon  # noqa: E731
    lane_y = {ln: AXIS_H + i * LANE_H for i, ln in enumerate(lanes)}
    height = AXIS_H + LANE_H * len(lanes) + 6
    pid = _e(plan["plan_id"])
    out = [f'<svg class="gantt" data-plan="{pid}" viewBox="0 0 {CHART_W} {height}" width="100%" '
           f'role="img" aria-label="Gantt chart of plan {pid}" xmlns="http://www.w3.org/2000/svg">']
    # axis and grid
    step = _tick_step(horizon)
    t = 0.0
    while t <= horizon + 1e-9:
        out.append(f'<line class="grid" x1="{x(t):.1f}" y1="{AXIS_H - 4}" x2="{x(t):.1f}" y2="{height - 6}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{AXIS_H - 8}">{_e(fmt_s(t))}</text>')
        t += step
    # lanes
    prev_node = None
    for (node, gpu), y in lane_y.items():
        sep = " node-start" if node != prev_node else ""
        prev_node = node
        out.append(f'<g class="lane{sep}" data-node="{_e(node)}" data-gpu="{gpu}">'
                   f'<rect class="lane-bg" x="{GUTTER}" y="{y}" width="{plot_w}" height="{LANE_H}"/>'
                   f'<text class="lane-label" x="{GUTTER - 6}" y="{y + LANE_H / 2 + 4}">{_e(node)} · {kind[(node, gpu)]} {gpu}</text></g>')
    # planned bars: one per job per GPU lane, label on the job's first lane
    for a in plan["assignments"]:
        first = min(a["gpu_ids"]) if a["gpu_ids"] else None
        for g in a["gpu_ids"]:
            y = lane_y.get((a["node"], g))
            if y is None:
                continue
            x0, x1 = x(a["start_s"]), x(a["end_s"])
            tip = (f'{a["job"]}: planned {fmt_s(a["start_s"])} to {fmt_s(a["end_s"])} '
                   f'({a["parallelism"]}, {a["gpus"]} GPU{"s" if a["gpus"] != 1 else ""} on {a["node"]})')
            out.append(f'<g class="bar planned" data-plan="{pid}" data-job="{_e(a["job"])}" data-node="{_e(a["node"])}" '
                       f'data-gpu="{g}" data-start="{a["start_s"]:.3f}" data-end="{a["end_s"]:.3f}">'
                       f'<title>{_e(tip)}</title>'
                       f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(1.0, x1 - x0):.1f}" height="{LANE_H / 2 - 2}" '
                       f'rx="2" fill="{job_color(a["job"])}"/>')
            if g == first:
                out.append(f'<text class="bar-label" x="{x0 + 3:.1f}" y="{y + LANE_H / 2 - 3}">'
                           f'{_e(a["job"])} · {_e(a["parallelism"])}×{a["gpus"]}</text>')
            out.append("</g>")
    # actual bars, colored by state, with the projected remainder of running jobs hatched
    for s in spans:
        color = STATE_COLORS.get(s["state"], PENDING_COLOR)
        for g in s["gpu_ids"]:
            y = lane_y.get((s["node"], g))
            if y is None:
                continue
            x0, x1 = x(s["start_s"]), x(s["end_s"])
            prog = f' {s["step"]}/{s["total"]} steps' if s.get("total") else ""
            tip = f'{s["job"]}: {s["state"]} {fmt_s(s["start_s"])} to {fmt_s(s["end_s"])}{prog}'
            out.append(f'<g class="bar actual state-{_e(s["state"])}" data-plan="{pid}" data-job="{_e(s["job"])}" '
                       f'data-node="{_e(s["node"])}" data-gpu="{g}" data-state="{_e(s["state"])}" '
                       f'data-start="{s["start_s"]:.3f}" data-end="{s["end_s"]:.3f}"><title>{_e(tip)}</title>'
                       f'<rect x="{x0:.1f}" y="{y + LANE_H / 2 + 1}" width="{max(1.0, x1 - x0):.1f}" '
                       f'height="{LANE_H / 2 - 3}" rx="2" fill="{color}"/>')
            if s["eta_end_s"] is not None and s["eta_end_s"] > s["end_s"]:
                out.append(f'<rect class="eta" x="{x1:.1f}" y="{y + LANE_H / 2 + 1}" '
                           f'width="{max(1.0, x(s["eta_end_s"]) - x1):.1f}" height="{LANE_H / 2 - 3}" '
                           f'rx="2" fill="url(#hatch-{pid})" stroke="{color}"/>')
            out.append("</g>")
    if now_rel is not None and 0 <= now_rel <= horizon:
        out.append(f'<line class="now" x1="{x(now_rel):.1f}" y1="{AXIS_H - 4}" x2="{x(now_rel):.1f}" y2="{height - 6}"/>')
    out.append(f'<defs><pattern id="hatch-{pid}" width="6" height="6" patternUnits="userSpaceOnUse" '
               'patternTransform="rotate(45)"><rect width="3" height="6" fill="#2f6fde" opacity="0.35"/>'
               '</pattern></defs></svg>')
    return "".join(out)


def _summary_html(sm: dict) -> str:
    rows = [("lower bound", sm["lower_bound_s"], "lb"), ("planned", sm["planned_makespan_s"], "planned")]
    if sm["actual_makespan_s"] is not None:
        rows.append(("actual", sm["actual_makespan_s"], "actual"))
    elif sm["projected_makespan_s"] is not None:
        rows.append(("projected", sm["projected_makespan_s"], "projected"))
    if sm["baseline_makespan_s"] is not None:
        rows.append(("current practice", sm["baseline_makespan_s"], "baseline"))
    top = max([v for _, v, _ in rows if v] + [1e-9])
    bars = "".join(
        f'<div class="cmp-row" data-metric="{k}" data-seconds="{v:.3f}"><span class="cmp-name">{_e(name)}</span>'
        f'<span class="cmp-track"><span class="cmp-bar cmp-{k}" style="width:{100 * v / top:.1f}%"></span></span>'
        f'<span class="cmp-val">{_e(fmt_s(v))}</span></div>' for name, v, k in rows)
    notes = []
    planned, lb, base = sm["planned_makespan_s"], sm["lower_bound_s"], sm["baseline_makespan_s"]
    if lb and lb > 0:
        notes.append(f"planned is {planned / lb:.2f}× the lower bound")
    if base:
        notes.append(f"planned is {100 * (1 - planned / base):.0f}% below current practice" if planned <= base
                     else f"planned is {100 * (planned / base - 1):.0f}% above current practice")
        real = sm["actual_makespan_s"]
        if real is not None:
            notes.append(f"actual is {100 * (1 - real / base):.0f}% below current practice" if real <= base
                         else f"actual is {100 * (real / base - 1):.0f}% above current practice")
    states = ", ".join(f"{n} {st}" for st, n in sm["states"].items()) or "not started"
    notes.append(f'{sm["jobs_done"]}/{sm["jobs"]} jobs done ({states})')
    return f'<div class="summary">{bars}<p class="notes">{_e("; ".join(notes))}</p></div>'


def _failed_html(failed: dict[str, str]) -> str:
    """Jobs that failed for good, named with the reason: never dropped silently."""
    if not failed:
        return ""
    items = "".join(f'<li data-job="{_e(j)}"><b>{_e(j)}</b>: {_e(why)}</li>' for j, why in sorted(failed.items()))
    return (f'<div class="failed-jobs" role="alert"><b>{len(failed)} job{"s" if len(failed) != 1 else ""} failed</b> '
            f'(clear its task in Airflow to resume it from its checkpoint):<ul>{items}</ul></div>')


def _lineage_html(data: dict, dag_urls: Optional[dict[str, str]] = None) -> str:
    items = []
    for p in data["plans"]:
        url = (dag_urls or {}).get(p["plan_id"])
        link = f' · <a class="dag-link" href="{_e(url)}" target="_top">DAG</a>' if url else ""
        sv = p["solver"]
        gap = f', gap {100 * sv["gap"]:.1f}%' if isinstance(sv.get("gap"), (int, float)) else ""
        reason = f'<div class="reason">re-plan: {_e(p["reason"])}</div>' if p.get("reason") else (
            '<div class="reason">re-plan</div>' if p["parent_plan_id"] else "")
        items.append(f'<li data-plan="{_e(p["plan_id"])}"><a href="#plan-{_e(p["plan_id"])}"><b>v{p["version"]}</b></a> '
                     f'<code>{_e(p["plan_id"])}</code> · {_e(p["created_at"])} · {_e(sv["name"])} '
                     f'{_e(sv["status"])}{_e(gap)} · makespan {_e(fmt_s(p["plan"]["makespan_s"]))}{link}{reason}</li>')
    return f'<ol class="lineage">{"".join(items)}</ol>'


def _jobs_table(p: dict) -> str:
    acts = {s["job"]: s for s in p["actual"]}
    rows = []
    for a in sorted(p["plan"]["assignments"], key=lambda a: (a["start_s"], a["job"])):
        s = acts.get(a["job"])
        state = s["state"] if s else "pending"
        prog = f'{s["step"]}/{s["total"]}' if s and s.get("total") else "-"
        rate = f'{s["rate_steps_per_s"]:.2f}/s' if s and isinstance(s.get("rate_steps_per_s"), (int, float)) else "-"
        if s and s["state"] == "running" and isinstance(s.get("steady_rate_steps_per_s"), (int, float)):
            rate = f'{s["steady_rate_steps_per_s"]:.2f}/s now, {rate} avg'
        eta = fmt_s(s["eta_end_s"] - s["end_s"]) if s and s["eta_end_s"] is not None else "-"
        rows.append(f'<tr data-job="{_e(a["job"])}"><td>{_e(a["job"])}</td><td>{_e(a["parallelism"])}</td>'
                    f'<td>{a["gpus"]}</td><td>{_e(a["node"])}: {_e(",".join(map(str, a["gpu_ids"])))}</td>'
                    f'<td>{_e(fmt_s(a["start_s"]))} - {_e(fmt_s(a["end_s"]))}</td>'
                    f'<td>{_e(fmt_s(s["start_s"]) + " - " + fmt_s(s["end_s"])) if s else "-"}</td>'
                    f'<td><span class="dot" style="background:{STATE_COLORS.get(state, PENDING_COLOR)}"></span>{_e(state)}'
                    + (f' <span class="why">({_e(s["error"])})</span>' if s and s.get("error") else "") + '</td>'
                    f'<td>{_e(prog)}</td><td>{_e(rate)}</td><td>{_e(eta)}</td></tr>')
    return ('<table class="jobs"><thead><tr><th>job</th><th>parallelism</th><th>GPUs</th><th>where</th>'
            '<th>planned</th><th>actual</th><th>state</th><th>steps</th><th>rate</th><th>ETA</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1d2330;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:18px 0 6px}
code{font-size:12px;background:#f1f3f6;padding:0 3px;border-radius:3px}
.lineage{margin:4px 0 8px;padding-left:22px}.lineage li{margin:2px 0}.reason{color:#8a5a00;font-size:13px}
.summary{max-width:640px;margin:6px 0}.cmp-row{display:flex;align-items:center;gap:8px;margin:2px 0}
.cmp-name{width:120px;text-align:right;color:#555}.cmp-track{flex:1;background:#f1f3f6;height:12px;border-radius:3px}
.cmp-bar{display:block;height:12px;border-radius:3px}.cmp-lb{background:#9aa3b2}.cmp-planned{background:#7e57c2}
.cmp-actual{background:#2e9e5b}.cmp-projected{background:#2f6fde}.cmp-baseline{background:#d64545}
.cmp-val{width:70px}.notes{color:#444;margin:4px 0}
svg.gantt{display:block;max-width:1400px;font-size:11px}
.grid{stroke:#e3e6ea}.tick{fill:#666;text-anchor:middle}.lane-bg{fill:#fafbfc;stroke:#eef0f3}
.lane.node-start .lane-bg{stroke:#c5cad3}.lane-label{fill:#444;text-anchor:end}
.bar-label{fill:#1d2330;font-size:10px;pointer-events:none}.now{stroke:#d64545;stroke-dasharray:4 3}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:#444;margin:4px 0}
.swatch,.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
table.jobs{border-collapse:collapse;font-size:12px;margin-top:6px}
table.jobs td,table.jobs th{border-bottom:1px solid #eef0f3;padding:2px 8px;text-align:left}
details>summary{cursor:pointer;color:#333}.empty{color:#777}
.failed-jobs{border:1px solid #d64545;background:#fdecec;color:#7a1f1f;padding:6px 10px;border-radius:4px;max-width:900px}
.failed-jobs ul{margin:4px 0 0;padding-left:20px}
"""


def _legend() -> str:
    items = ['<span><span class="swatch" style="background:hsl(260,55%,72%)"></span>planned (upper half of a lane)</span>']
    items += [f'<span><span class="swatch" style="background:{c}"></span>{st}</span>' for st, c in STATE_COLORS.items()]
    items.append('<span><span class="swatch" style="background:repeating-linear-gradient(45deg,#2f6fde55 0 2px,#fff 2px 4px);'
                 'border:1px solid #2f6fde"></span>projected (running)</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def render_html(plans: list[Plan], progress: Optional[dict[str, dict]] = None,
                baseline_makespan_s: Optional[float] = None, *, cluster: Any = None,
                now: Optional[float] = None, title: Optional[str] = None,
                refresh_s: Optional[int] = None, dag_urls: Optional[dict[str, str]] = None, table: Any = None,
                extra_html: str = "") -> str:
    """One self-contained page for a plan lineage (oldest first, newest last): lineage with re-plan
    reasons, makespan comparison, and a Gantt chart per plan version (newest first, older folded).

    `progress` is ProgressStore.all(workload): job -> latest record. `cluster` (optional) gives the
    lane count of each node; by default the GPUs the plan and the records use. `refresh_s` adds a
    meta refresh for live pages; `dag_urls` (plan id -> URL) links each version to its DAG;
    `extra_html` (e.g. the leaderboard) goes right under the makespan comparison.
    """
    plans = list(plans)
    data = chart_data(plans, progress, baseline_makespan_s, cluster=cluster, now=now, table=table)
    name = title or (f"Saturn plan: {data['workload']}" if plans else "Saturn plans")
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(name)}</title>'
            + (f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else "")
            + f'<style>{CSS}</style></head><body>')
    if not plans:
        return head + f'<h1>{_e(name)}</h1><p class="empty">No plans yet.</p></body></html>'
    body = [f'<h1>{_e(name)}</h1>', _failed_html(data["sweep"]["failed"]), '<h2>Makespan' + (' (whole sweep, all versions)' if len(plans) > 1 else '')
            + '</h2><div class="sweep">' + _summary_html(data["sweep"]) + '</div>', extra_html,
            '<h2>Lineage</h2>', _lineage_html(data, dag_urls)]
    for i, p in enumerate(reversed(data["plans"])):
        newest = i == 0
        origin = p["origin_epoch_s"]
        now_rel = (data["now"] - origin) if any(s["state"] == "running" for s in p["actual"]) else None
        section = (f'<section class="plan" id="plan-{_e(p["plan_id"])}" data-plan="{_e(p["plan_id"])}">'
                   f'<h2>v{p["version"]} · <code>{_e(p["plan_id"])}</code>'
                   f'{" (superseded)" if not newest else ""}</h2>'
                   + (_summary_html(p["summary"]) if len(plans) > 1 else "") + _legend() + _gantt_svg(p, now_rel) + _jobs_table(p)
                   + '</section>')
        body.append(section if newest else f'<details><summary>v{p["version"]} · {_e(p["plan_id"])}</summary>{section}</details>')
    return head + "".join(body) + "</body></html>"


def index_table(entries: Iterable[dict]) -> str:
    """One row per plan lineage (entries: workload, plan_id, versions, makespan_s, href, and
    optionally created_at, jobs, jobs_done)."""
    rows = "".join(
        f'<tr data-plan="{_e(e["plan_id"])}"><td>{_e(e["workload"])}</td>'
        f'<td><a href="{_e(e["href"])}"><code>{_e(e["plan_id"])}</code></a></td>'
        f'<td>{e["versions"]}</td><td>{_e(fmt_s(e["makespan_s"]))}</td>'
        f'<td>{_e(str(e.get("jobs_done", "-")) + "/" + str(e.get("jobs", "-")))}</td>'
        f'<td>{_e(e.get("created_at", ""))}</td></tr>'
        for e in entries)
    if not rows:
        return '<p class="empty">No plans yet. Trigger the <code>saturn_plan</code> DAG with a workload.</p>'
    return ('<table class="jobs index"><thead><tr><th>workload</th><th>latest plan</th><th>versions</th>'
            f'<th>planned makespan</th><th>jobs done</th><th>created</th></tr></thead><tbody>{rows}</tbody></table>')


def render_index(entries: Iterable[dict], newest: Optional[str] = None) -> str:
    """The plugin's landing page: the lineages, then (`newest`, a render_html body) the latest chart."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Saturn plans</title>'
            f'<style>{CSS}</style></head><body><h1>Saturn plans</h1>{index_table(entries)}'
            f'{newest or ""}</body></html>')


def page_body(page: str) -> str:
    """The inside of <body> of a page from render_html (to embed it in another page)."""
    start = page.find("<body>")
    end = page.rfind("</body>")
    return page[start + len("<body>"):end] if start >= 0 and end > start else page
