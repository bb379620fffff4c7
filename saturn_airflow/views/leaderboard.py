"""The leaderboard of a sweep: jobs ranked by their held-out metric, with what produced each result.

Built from the store alone (results records, progress records, exports), so `saturn results`, the
Airflow page, the demo and MLflow's winner tag all agree. Jobs are ranked within a section per
(metric, goal): finished jobs first by final value, ties broken by best value; then stopped,
running, failed and pending ones. The winner is the first finished job of the first section.
A job without a held-out evaluation is ranked by its last training loss (`train_loss`), said so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from saturn_airflow.store.files import ProgressStore, Store
from saturn_airflow.store.metrics import MetricsStore, wall_s

STATE_ORDER = {"done": 0, "stopped": 1, "running": 2, "preempted": 2, "paused": 2, "failed": 3, "pending": 4}
TRAIN_LOSS = "train_loss"


@dataclass
class Row:
    job: str
    state: str
    metric: str
    goal: str
    final: Optional[float] = None
    final_step: Optional[int] = None
    best: Optional[float] = None
    best_step: Optional[int] = None
    values: dict[str, float] = field(default_factory=dict)  # every metric at the final point
    steps: Optional[int] = None
    step: Optional[int] = None
    params: dict[str, Any] = field(default_factory=dict)
    parallelism: Optional[str] = None
    gpus: Optional[int] = None
    wall_s: Optional[float] = None
    export_path: Optional[str] = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, ranking metric) per evaluation
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # every metric
    rank: Optional[int] = None
    winner: bool = False


@dataclass
class Section:
    metric: str
    goal: str
    rows: list[Row]
    heldout: bool = True


@dataclass
class Board:
    workload: str
    sweep: str
    sections: list[Section]
    varying: list[str]  # hyper-parameters that differ between jobs (the table's columns)

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in s.rows]

    @property
    def winner(self) -> Optional[Row]:
        return next((r for r in self.rows if r.winner), None)

    def to_dict(self) -> dict:
        w = self.winner
        return {"workload": self.workload, "sweep": self.sweep, "varying": self.varying,
                "winner": None if w is None else {"job": w.job, "metric": w.metric, "final": w.final,
                                                  "export_path": w.export_path},
                "sections": [{"metric": s.metric, "goal": s.goal, "heldout": s.heldout,
                              "rows": [asdict(r) for r in s.rows]} for s in self.sections]}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _state(progress: Optional[dict], results: Optional[dict]) -> str:
    if progress and progress.get("state"):
        return str(progress["state"])
    if results and results.get("attempts"):
        return str(results["attempts"][-1].get("status") or "running")
    return "pending"


def _row(job: str, results: Optional[dict], progress: Optional[dict], export: Optional[dict]) -> Row:
    ev = (results or {}).get("evaluation")
    points = [p for p in (results or {}).get("points") or [] if isinstance(p.get("values"), dict)]
    if ev:
        metric, goal = ev["metric"], ev["goal"]
        curve = [(int(p["step"]), float(p["values"][metric])) for p in points if _finite(p["values"].get(metric))]
        curves = {m: [(int(p["step"]), float(p["values"][m])) for p in points if _finite(p["values"].get(m))]
                  for m in ev.get("metrics") or [metric]}
        values = dict(points[-1]["values"]) if points else {}
    else:  # no held-out set: the training loss the runner last reported
        metric, goal, curves = TRAIN_LOSS, "min", {}
        loss = (progress or {}).get("loss")
        curve = [(int(progress.get("step") or 0), float(loss))] if _finite(loss) else []
        values = {TRAIN_LOSS: float(loss)} if _finite(loss) else {}
    row = Row(job=job, state=_state(progress, results), metric=metric, goal=goal, values=values, curve=curve,
              curves=curves)
    if curve:
        row.final_step, row.final = curve[-1]
        pick = min if goal == "min" else max
        row.best_step, row.best = pick(curve, key=lambda sv: sv[1])  # the earliest of equal bests
    attempts = (results or {}).get("attempts") or []
    last = attempts[-1] if attempts else {}
    row.parallelism = (progress or {}).get("parallelism") or last.get("parallelism")
    ids = (progress or {}).get("device_ids") or last.get("device_ids")
    row.gpus = len(ids) if ids else None
    row.wall_s = wall_s(results)
    if row.wall_s is None and progress and _finite(progress.get("started_at")):
        end = progress.get("finished_at") or progress.get("updated_at")
        row.wall_s = float(end) - float(progress["started_at"]) if _finite(end) else None
    row.steps = (results or {}).get("steps") or (progress or {}).get("total")
    row.step = (progress or {}).get("step") if progress else last.get("end_step")
    row.params = dict((results or {}).get("params") or {})
    row.export_path = (export or {}).get("path")
    return row


def _sort_key(r: Row) -> tuple:
    sign = 1.0 if r.goal == "min" else -1.0
    return (STATE_ORDER.get(r.state, 3), r.final is None, sign * (r.final if r.final is not None else 0.0),
            sign * (r.best if r.best is not None else 0.0), r.job)


def varying_params(rows: Iterable[Row]) -> list[str]:
    """Hyper-parameters whose value is not the same for every job (in a stable, readable order). The
    data factory and its arguments describe the task, not a choice being compared: they stay out of
    the table's columns (CSV and JSON carry every parameter)."""
    rows = [r for r in rows if r.params]  # a job that never started has none to compare
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.params if k not in keys and k != "data" and not k.startswith("data_args.")]
    out = [k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True) for r in rows}) > 1]
    return sorted(out, key=lambda k: (not k.startswith("optimizer"), k))


def leaderboard(store: Store, workload: str, sweep: str, jobs: Optional[Iterable[str]] = None) -> Board:
    """The board of one sweep of `workload` (every job with a record, or exactly `jobs` when given)."""
    from saturn_airflow.execution.export import read_export

    results = MetricsStore(store, sweep=sweep).all(workload)
    progress = {k: v for k, v in ProgressStore(store, sweep=sweep).all(workload).items() if v}
    names = list(jobs) if jobs is not None else sorted(set(results) | set(progress))
    rows = [_row(j, results.get(j), progress.get(j), read_export(store, workload, sweep, j)) for j in names]
    sections: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        sections.setdefault((r.metric, r.goal), []).append(r)
    out = []
    for (metric, goal), rs in sorted(sections.items(), key=lambda kv: (kv[0][0] == TRAIN_LOSS, -len(kv[1]), kv[0])):
        rs.sort(key=_sort_key)
        for i, r in enumerate(rs, 1):
            r.rank = i if r.final is not None else None
        out.append(Section(metric, goal, rs, heldout=metric != TRAIN_LOSS))
    first = out[0].rows[0] if out and out[0].rows else None
    if first is not None and first.state == "done" and first.final is not None:
        first.winner = True
    return Board(workload, sweep, out, varying_params(rows))


# ---- text, CSV, JSON -----------------------------------------------------------------------------

def _num(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _param(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def fmt_s(s: Optional[float]) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def render_text(board: Board, *, paths: bool = True) -> str:
    """The leaderboard as an aligned terminal table per section, the winner marked with '*'."""
    if not board.rows:
        return f"Leaderboard of {board.workload}: no job has results yet."
    lines = []
    for sec in board.sections:
        better = "lower" if sec.goal == "min" else "higher"
        what = f"held-out {sec.metric}" if sec.heldout else "last training loss (no held-out evaluation configured)"
        done = sum(r.state == "done" for r in sec.rows)
        n = len(sec.rows)
        lines.append(f"Leaderboard of {board.workload}: {what}, {better} is better; {n} job{'s' * (n != 1)}, {done} done")
        others = [m for m in dict.fromkeys(k for r in sec.rows for k in r.values) if m != sec.metric]
        head = ["#", "job", "state", f"{sec.metric} final", "best (step)"] + others + board.varying + \
               ["parallelism", "GPUs", "wall"] + (["model file"] if paths else [])
        table = [head]
        for r in sec.rows:
            best = "-" if r.best is None else f"{_num(r.best)} ({r.best_step})"
            final = "-" if r.final is None else f"{_num(r.final)} @{r.final_step}"
            table.append([f"{r.rank or '-'}{'*' if r.winner else ''}", r.job, r.state, final, best]
                         + [_num(r.values.get(m)) for m in others]
                         + [_param(r.params.get(k, "-")) for k in board.varying]
                         + [r.parallelism or "-", str(r.gpus or "-"), fmt_s(r.wall_s)]
                         + ([r.export_path or "-"] if paths else []))
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        lines.append("")
    w = board.winner
    if w is not None:
        lines.append(f"Winner: {w.job} ({w.metric} {_num(w.final)} at step {w.final_step})"
                     + (f"; model: {w.export_path}" if w.export_path else ""))
    return "\n".join(lines).rstrip()


CSV_FIELDS = ["section_metric", "rank", "winner", "job", "state", "goal", "final", "final_step", "best", "best_step",
              "parallelism", "gpus", "wall_s", "step", "steps", "export_path"]


def render_csv(board: Board) -> str:
    metrics = list(dict.fromkeys(k for r in board.rows for k in r.values))
    params = list(dict.fromkeys(k for r in board.rows for k in r.params))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS + [f"metric.{m}" for m in metrics] + [f"param.{p}" for p in params])
    for r in board.rows:
        d = asdict(r)
        d["section_metric"] = r.metric
        w.writerow(["" if d.get(k) is None else d[k] for k in CSV_FIELDS]
                   + ["" if r.values.get(m) is None else r.values[m] for m in metrics]
                   + ["" if r.params.get(p) is None else r.params[p] for p in params])
    return buf.getvalue()


def render_json(board: Board) -> str:
    return json.dumps(board.to_dict(), indent=1)


__all__ = ["Board", "Row", "Section", "leaderboard", "render_text", "render_csv", "render_json", "varying_params"]
