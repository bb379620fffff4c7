"""A terminal Gantt chart of a plan: one row per GPU, one letter per job, a legend, and the makespan
against the lower bound. Plain ASCII so it survives logs, CI output and Airflow task logs."""

from __future__ import annotations

import string
from typing import Optional

from saturn_airflow.spec.plan import Plan

SYMBOLS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.1f}s"


def _symbol(i: int) -> str:
    return SYMBOLS[i % len(SYMBOLS)]


def render(plan: Plan, width: int = 72, node_gpus: Optional[dict[str, int]] = None) -> str:
    """The chart as text. `node_gpus` (node -> GPU count) also draws GPUs no job uses."""
    span = plan.makespan_s or 1.0
    width = max(10, width)
    order = sorted(plan.assignments, key=lambda a: (a.start_s, a.job))
    sym = {a.job: _symbol(i) for i, a in enumerate(order)}
    nodes: dict[str, int] = dict(node_gpus or {})
    for a in plan.assignments:
        nodes[a.node] = max(nodes.get(a.node, 0), max(a.gpu_ids, default=-1) + 1)
    lines = []
    ticks = 4
    axis = [" "] * (width + 1)
    labels = []
    for k in range(ticks + 1):
        pos = round(k * width / ticks)
        labels.append((pos, fmt_duration(span * k / ticks)))
    for pos, text in labels:
        start = min(max(0, pos - len(text) // 2), width + 1 - len(text))
        for i, ch in enumerate(text):
            if 0 <= start + i <= width:
                axis[start + i] = ch
    for node in sorted(nodes):
        lines.append(f"{node}")
        lines.append("        " + "".join(axis).rstrip())
        for gid in range(nodes[node]):
            row = ["."] * width
            for a in plan.assignments:
                if a.node != node or gid not in a.gpu_ids:
                    continue
                c0 = int(a.start_s / span * width + 0.5)
                c1 = max(c0 + 1, int(a.end_s / span * width + 0.5))
                for c in range(c0, min(c1, width)):
                    row[c] = sym[a.job]
            lines.append(f"  gpu{gid:<3d}|" + "".join(row) + "|")
    lines.append("")
    for a in order:
        ids = ",".join(str(g) for g in a.gpu_ids)
        lines.append(f"  {sym[a.job]} {a.job}  {a.parallelism} x{a.gpus} on {a.node}[{ids}]  "
                     f"{fmt_duration(a.start_s)} -> {fmt_duration(a.end_s)}")
    lines.append("")
    lines.append(summary(plan))
    return "\n".join(lines)


def summary(plan: Plan) -> str:
    lb = plan.lower_bound_s
    over = f" (+{(plan.makespan_s / lb - 1) * 100:.1f}% over it)" if lb > 0 else ""
    s = plan.solver
    gap = f", gap {s.gap * 100:.1f}%" if s.gap is not None else ""
    return (f"makespan {fmt_duration(plan.makespan_s)}, lower bound {fmt_duration(lb)}{over}; "
            f"{s.name} {s.status} in {s.time_s:.1f}s{gap}; {len(plan.assignments)} jobs")
