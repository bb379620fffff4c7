"""The successive-halving section of a plan page: per group, each job's metric at every rung, where it
stopped or how far it went, and the winner. Plain HTML (the plan page's CSS), no Airflow import.

Built from what a sweep leaves in its stores: the plans' `early_stop` sections (groups, rungs, keep),
the progress records (stopped, paused, done) and the results records (the values at rungs).
"""

from __future__ import annotations

import html
from typing import Any, Optional

from saturn_airflow.control import segments
from saturn_airflow.control.early_stop import PROMOTE, RUN, STOP, WAIT, best, quotas
from saturn_airflow.spec.plan import Plan


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def halving_data(lineage: list[Plan], progress: Optional[dict], metric_records: Optional[dict]) -> Optional[dict]:
    """What the section shows, as JSON-able data; None for a sweep without successive halving."""
    plan = next((p for p in reversed(lineage) if segments.section(p) is not None), None)
    if plan is None:
        return None
    h = segments.halving_of(plan)
    ids = {p.plan_id for p in lineage}
    recs = segments.of_lineage(progress or {}, ids)
    values = segments.rung_values(h, metric_records or {}, ids)
    finals = segments.final_values(h, metric_records or {}, ids)
    verdict = segments.verdicts(h, metric_records or {}, recs, ids)
    groups = []
    for name, members in h.groups.items():
        done = [j for j in members if (recs.get(j) or {}).get("state") == "done" and finals.get(j) is not None]
        win = best(done, finals, h.goal)
        rows = []
        for j in members:
            v = verdict.get(j)
            state = (recs.get(j) or {}).get("state") or "pending"
            if state == "done":
                where = "finished"
            elif state == segments.STOPPED or (v is not None and v.action == STOP):
                where = f"stopped at rung {v.rung} (rank {v.rank} of {v.arrived}, {v.quota} go on)" if v else "stopped"
                state = segments.STOPPED
            elif v is not None and v.action == PROMOTE:
                where = f"promoted at rung {v.rung}"
            elif v is not None and v.action == WAIT:
                where = f"waits at rung {v.rung} (rank {v.rank} of {v.arrived} so far, {v.quota} go on)"
            else:
                where = state if v is None or v.action == RUN else ""
            rows.append({"job": j, "state": state, "values": {r: values.get(j, {}).get(r) for r in h.rungs},
                         "final": finals.get(j), "where": where, "winner": j == win})
        groups.append({"group": name, "jobs": len(members), "quotas": quotas(len(members), h.keep, len(h.rungs)),
                       "winner": win, "rows": rows})
    return {"metric": h.metric, "goal": h.goal, "keep": h.keep, "rungs": h.rungs, "groups": groups}


def _num(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4g}"


def render_halving(lineage: list[Plan], progress: Optional[dict], metric_records: Optional[dict]) -> str:
    data = halving_data(lineage, progress, metric_records)
    if data is None:
        return ""
    out = [f'<h2>Successive halving</h2><p class="notes">{_e(data["metric"])} ({_e(data["goal"])}), rungs at steps '
           f'{_e(", ".join(map(str, data["rungs"])))}, keep {data["keep"]:g} per rung</p>']
    for g in data["groups"]:
        head = "".join(f"<th>rung {r}<br>({k} go on)</th>" for r, k in zip(data["rungs"], g["quotas"]))
        rows = []
        for r in g["rows"]:
            cls = ' class="win"' if r["winner"] else (' class="stop"' if r["state"] == segments.STOPPED else "")
            cells = "".join(f"<td>{_num(r['values'][x])}</td>" for x in data["rungs"])
            mark = " &#9733; winner" if r["winner"] else ""
            rows.append(f'<tr data-job="{_e(r["job"])}" data-state="{_e(r["state"])}"><td{cls}>{_e(r["job"])}{mark}</td>'
                        f'{cells}<td>{_num(r["final"])}</td><td{cls}>{_e(r["where"])}</td></tr>')
        out.append(f'<table class="jobs halving" data-group="{_e(g["group"])}"><caption>group {_e(g["group"])}: '
                   f'{g["jobs"]} jobs</caption><thead><tr><th>job</th>{head}<th>final</th><th>where it went</th></tr>'
                   f'</thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(out)


__all__ = ["halving_data", "render_halving"]
