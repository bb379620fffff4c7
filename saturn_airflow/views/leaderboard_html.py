"""The leaderboard and each job's metric curves as an HTML fragment (a table and inline SVG, no script, no CDN).

Embedded in the plan page (`gantt_html.render_html(extra_html=...)`), so the Airflow tab and
`saturn show --html` show the same thing. Rows and curves carry data-* attributes (job, rank,
winner, metric) so tests read them through the DOM.
"""

from __future__ import annotations

import hashlib
import html
import math
from typing import Any, Optional

from saturn_airflow.spec.workload import DEFAULT_GOALS
from saturn_airflow.views.leaderboard import Board, Row, Section, fmt_s

W, H = 460, 210
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 14, 30

CSS = """
.results table.leaderboard{border-collapse:collapse;font-size:12px;margin:6px 0}
.results table.leaderboard td,.results table.leaderboard th{border-bottom:1px solid #eef0f3;padding:2px 8px;text-align:left}
.results tr.winner td{background:#fff6d6;font-weight:600}.results .trophy{color:#b8860b}
.results .curves-row{display:flex;flex-wrap:wrap;gap:12px}.results figure{margin:0}
.results figcaption{font-size:12px;color:#444}.results svg.curves{font-size:10px;background:#fafbfc;border:1px solid #eef0f3}
.results .axis{stroke:#9aa3b2}.results .gridline{stroke:#e3e6ea}.results .tick{fill:#666}
.results polyline.curve{fill:none;stroke-width:1.6}.results polyline.curve.winner{stroke-width:3.2}
.results .note{color:#555;font-size:12px;margin:2px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def line_color(job: str) -> str:
    h = int(hashlib.sha1(job.encode()).hexdigest()[:6], 16) % 360
    return f"hsl({h},62%,40%)"


def _num(v: Optional[float]) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.4g}"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-12:
        out.append(round(t, 12))
        t += step
    return out


def curves_svg(metric: str, goal: Optional[str], rows: list[Row]) -> str:
    """One chart: `metric` against step, a line per job, the winner's thick."""
    series = [(r, r.curves.get(metric) or (r.curve if r.metric == metric else [])) for r in rows]
    series = [(r, pts) for r, pts in series if pts]
    if not series:
        return ""
    xs = [s for _, pts in series for s, _ in pts]
    ys = [v for _, pts in series for _, v in pts]
    x_hi = max([max(xs)] + [r.steps or 0 for r, _ in series]) or 1
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5 * (abs(y_lo) or 1), y_hi + 0.5 * (abs(y_hi) or 1)
    span = y_hi - y_lo
    y_lo, y_hi = y_lo - 0.05 * span, y_hi + 0.05 * span
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    fx = lambda s: PAD_L + pw * s / x_hi  # noqa: E731
    fy = lambda v: PAD_T + ph * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    out = [f'<svg class="curves" data-metric="{_e(metric)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" aria-label="{_e(metric)} against step" xmlns="http://www.w3.org/2000/svg">']
    for t in _ticks(y_lo, y_hi):
        y = fy(t)
        out.append(f'<line class="gridline" x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end">{_e(_num(t))}</text>')
    for t in _ticks(0, x_hi):
        x = fx(t)
        out.append(f'<text class="tick" x="{x:.1f}" y="{H - PAD_B + 13}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>'
               f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>'
               f'<text class="tick" x="{PAD_L + pw / 2:.0f}" y="{H - 3}" text-anchor="middle">step</text>')
    for r, pts in sorted(series, key=lambda rp: rp[0].winner):  # the winner drawn last, on top
        coords = " ".join(f"{fx(s):.1f},{fy(v):.1f}" for s, v in pts)
        cls = "curve winner" if r.winner else "curve"
        tip = f"{r.job}: {metric} " + ", ".join(f"{v:.4g} @{s}" for s, v in pts[-3:])
        out.append(f'<polyline class="{cls}" data-job="{_e(r.job)}" data-points="{len(pts)}" '
                   f'stroke="{line_color(r.job)}" points="{coords}"><title>{_e(tip)}</title></polyline>')
        if len(pts) == 1:
            s, v = pts[0]
            out.append(f'<circle cx="{fx(s):.1f}" cy="{fy(v):.1f}" r="3" fill="{line_color(r.job)}"/>')
    out.append("</svg>")
    better = {"min": " (lower is better)", "max": " (higher is better)"}.get(goal or "", "")
    return f'<figure><figcaption>{_e(metric)}{better}</figcaption>{"".join(out)}</figure>'


def _section_table(board: Board, sec: Section) -> str:
    others = [m for m in dict.fromkeys(k for r in sec.rows for k in r.values) if m != sec.metric]
    head = ["#", "job", "state", f"{sec.metric} final", "best (step)"] + others + board.varying + \
           ["parallelism", "GPUs", "wall", "model"]
    rows = []
    for r in sec.rows:
        mark = ' <span class="trophy" title="winner">&#9733; winner</span>' if r.winner else ""
        swatch = f'<span class="dot" style="background:{line_color(r.job)}"></span>'
        model = f'<code title="{_e(r.export_path)}">{_e(r.export_path.rsplit("/", 3)[-2] + "/" + r.export_path.rsplit("/", 1)[-1])}</code>' \
            if r.export_path else "-"
        cells = [str(r.rank or "-"), f"{swatch}{_e(r.job)}{mark}", _e(r.state),
                 _e("-" if r.final is None else f"{_num(r.final)} @{r.final_step}"),
                 _e("-" if r.best is None else f"{_num(r.best)} ({r.best_step})")]
        cells += [_e(_num(r.values.get(m))) for m in others]
        cells += [_e(r.params.get(k, "-")) for k in board.varying]
        cells += [_e(r.parallelism or "-"), _e(r.gpus or "-"), _e(fmt_s(r.wall_s)), model]
        win = ' data-winner="true" class="winner"' if r.winner else ""
        rows.append(f'<tr data-job="{_e(r.job)}" data-rank="{r.rank or ""}" data-state="{_e(r.state)}"{win}>'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="leaderboard" data-metric="{_e(sec.metric)}" data-goal="{_e(sec.goal)}"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in head) + f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render_results(board: Optional[Board]) -> str:
    """The Results section: per (metric, goal) a leaderboard table and one curve chart per metric."""
    if board is None or not board.rows:
        return ""
    parts = [f'<style>{CSS}</style><section class="results"><h2>Results</h2>']
    w = board.winner
    if w is not None:
        parts.append(f'<p class="note winner-note" data-job="{_e(w.job)}">Winner: <b>{_e(w.job)}</b> '
                     f'({_e(w.metric)} {_e(_num(w.final))} at step {w.final_step})'
                     + (f'; model <code>{_e(w.export_path)}</code>' if w.export_path else "") + "</p>")
    for sec in board.sections:
        better = "lower" if sec.goal == "min" else "higher"
        what = f"held-out {sec.metric}" if sec.heldout else "last training loss (no held-out evaluation configured)"
        parts.append(f'<p class="note">Ranked by {_e(what)}, {better} is better: finished jobs by their final '
                     'value, ties by their best.</p>')
        parts.append(_section_table(board, sec))
        metrics = [sec.metric] + [m for m in dict.fromkeys(k for r in sec.rows for k in r.curves) if m != sec.metric]
        charts = [curves_svg(m, sec.goal if m == sec.metric else DEFAULT_GOALS.get(m), sec.rows) for m in metrics]
        charts = [c for c in charts if c]
        if charts:
            parts.append(f'<div class="curves-row">{"".join(charts)}</div>')
    parts.append("</section>")
    return "".join(parts)


__all__ = ["render_results", "curves_svg"]
