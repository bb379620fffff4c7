"""The leaderboard from store records: seeded-random sweeps of jobs in every state, both goals."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest

from saturn_airflow.spec.workload import parse_workload
from saturn_airflow.store.files import ProgressStore, Store
from saturn_airflow.store.metrics import MetricsStore, wall_s
from saturn_airflow.views.leaderboard import leaderboard, render_csv, render_json, render_text
from saturn_airflow.views.leaderboard_html import render_results

STATES = ["done", "done", "done", "running", "failed", "preempted"]
SWEEP = "sw-root"


def sweep(n_jobs: int, metric: str = "loss", goal=None):
    ev = {"metrics": ["loss", "accuracy"], "metric": metric, "every_steps": 10}
    if goal:
        ev["goal"] = goal
    return parse_workload({
        "name": "sw", "evaluation": ev,
        "jobs": [{"name": "m", "model": "saturn_airflow.examples.models:gpt", "data": "saturn_airflow.examples.data:tokens",
                  "batch_size": 8, "steps": 50}],
        "grid": {"optimizer.lr": [round(1e-4 * (i + 1), 6) for i in range(n_jobs)]}})


def fill(store: Store, wl, rng: random.Random, states=None) -> dict:
    """Random curves and states for every job; returns job -> (state, [(step, loss, accuracy)])."""
    ms, ps = MetricsStore(store, sweep=SWEEP), ProgressStore(store, sweep=SWEEP)
    truth = {}
    for i, job in enumerate(wl.jobs):
        state = (states or {}).get(job.name) or rng.choice(STATES)
        n_points = 0 if state == "failed" and rng.random() < 0.5 else (5 if state == "done" else rng.randint(1, 4))
        ms.start_attempt("sw", job, plan_id="p1", parallelism=rng.choice(["ddp", "fsdp"]),
                         device_ids=list(range(rng.choice([1, 2, 4]))), start_step=0)
        pts = []
        for k in range(1, n_points + 1):
            loss, acc = rng.uniform(0.5, 5.0), rng.uniform(0, 1)
            pts.append((10 * k, loss, acc))
            ms.add_point("sw", job.name, 10 * k, {"loss": loss, "accuracy": acc}, plan_id="p1")
        ms.end_attempt("sw", job.name, state, 10 * n_points)
        ps.put("sw", job.name, {"plan_id": "p1", "state": state, "step": 10 * n_points, "total": 50,
                                "parallelism": "ddp", "device_ids": [0, 1], "loss": rng.uniform(1, 3)})
        truth[job.name] = (state, pts)
    return truth


@pytest.mark.parametrize("seed", range(6))
def test_ranking_winner_and_best_follow_the_goal(tmp_path, seed):
    rng = random.Random(seed)
    metric, goal = rng.choice([("loss", None), ("accuracy", None), ("loss", "max"), ("accuracy", "min")])
    wl = sweep(rng.randint(3, 9), metric, goal)
    store = Store(str(tmp_path))
    truth = fill(store, wl, rng, states={wl.jobs[0].name: "done"})
    board = leaderboard(store, "sw", SWEEP, [j.name for j in wl.jobs])
    goal = wl.jobs[0].evaluation.goal
    idx = 1 if metric == "loss" else 2
    [sec] = board.sections
    assert (sec.metric, sec.goal) == (metric, goal) and len(sec.rows) == len(wl.jobs)
    sign = 1 if goal == "min" else -1
    done = sorted((sign * pts[-1][idx], j) for j, (st, pts) in truth.items() if st == "done")
    assert [r.job for r in sec.rows[:len(done)]] == [j for _, j in done]  # finished jobs first, by final value
    assert board.winner.job == done[0][1] and sum(r.winner for r in board.rows) == 1
    for r in sec.rows:
        st, pts = truth[r.job]
        assert r.state == st
        if pts:
            vals = [p[idx] for p in pts]
            assert r.final == pytest.approx(vals[-1]) and r.final_step == pts[-1][0]
            assert r.best == pytest.approx(min(vals) if goal == "min" else max(vals))
            assert r.curve == [(p[0], pytest.approx(p[idx])) for p in pts]
        else:
            assert r.final is None and r.rank is None
    assert board.varying == ["optimizer.lr"]  # batch_size, steps, model... are the same for every job
    text = render_text(board)
    marked = [line for line in text.splitlines() if line.strip().startswith("1*")]
    assert len(marked) == 1 and f" {board.winner.job} " in marked[0] and f"Winner: {board.winner.job} " in text

    rows = list(csv.DictReader(io.StringIO(render_csv(board))))
    assert [r["job"] for r in rows] == [r.job for r in sec.rows]
    assert [r["job"] for r in rows if r["winner"] == "True"] == [board.winner.job]
    assert {"param.optimizer.lr", "metric.loss", "metric.accuracy", "wall_s", "gpus"} <= set(rows[0])
    data = json.loads(render_json(board))
    assert data["winner"]["job"] == board.winner.job and len(data["sections"][0]["rows"]) == len(wl.jobs)

    page = render_results(board)
    assert page.count(' data-rank=') == len(wl.jobs) and page.count('data-winner="true"') == 1
    assert page.count('class="curve winner"') >= 1 and "<script" not in page
    assert not any(x in page for x in ('src="', "<link", "@import", 'href="http'))  # nothing from a CDN


def test_no_winner_until_a_job_is_done_and_train_loss_fallback(tmp_path):
    store = Store(str(tmp_path))
    wl = sweep(2)
    fill(store, wl, random.Random(1), states={j.name: "running" for j in wl.jobs})
    board = leaderboard(store, "sw", SWEEP)
    assert board.winner is None and "Winner" not in render_text(board)
    # a job without held-out evaluation: ranked by its last training loss, in a section of its own
    ProgressStore(store, sweep=SWEEP).put("sw", "other", {"state": "done", "step": 5, "total": 5, "loss": 0.25})
    board = leaderboard(store, "sw", SWEEP)
    assert [s.metric for s in board.sections] == ["loss", "train_loss"]
    other = [s for s in board.sections if s.metric == "train_loss"][0].rows[0]
    assert other.final == 0.25 and not other.winner and "no held-out evaluation" in render_text(board)


def test_points_are_keyed_by_step_and_wall_time_sums_attempts(tmp_path):
    store = Store(str(tmp_path))
    job = sweep(1).jobs[0]
    ms = MetricsStore(store, sweep=SWEEP)
    ms.start_attempt("sw", job, plan_id="p1", parallelism="ddp", device_ids=[0, 1], start_step=0)
    ms.add_point("sw", job.name, 10, {"loss": 2.0})
    ms.add_point("sw", job.name, 20, {"loss": 1.5})
    ms.end_attempt("sw", job.name, "preempted", 25)
    ms.start_attempt("sw", job, plan_id="p2", parallelism="pipeline", device_ids=[0, 1], start_step=20)
    ms.add_point("sw", job.name, 20, {"loss": 1.5})  # a resume from an older checkpoint repeats step 20
    ms.add_point("sw", job.name, 30, {"loss": 1.2})
    rec = ms.end_attempt("sw", job.name, "done", 50)
    assert [p["step"] for p in rec["points"]] == [10, 20, 30]
    a1, a2 = rec["attempts"]
    assert (a1["status"], a2["status"], a2["start_step"]) == ("preempted", "done", 20)
    assert wall_s(rec) == pytest.approx((a1["ended_at"] - a1["started_at"]) + (a2["ended_at"] - a2["started_at"]))
    assert rec["params"]["optimizer.lr"] == job.optimizer.lr and rec["spec"]["name"] == job.name


def test_each_sweep_has_its_own_results(tmp_path):
    """The workload planned again is a new sweep: its board starts empty, the first one's stays."""
    store = Store(str(tmp_path))
    wl = sweep(2)
    fill(store, wl, random.Random(3), states={j.name: "done" for j in wl.jobs})
    assert len(leaderboard(store, "sw", SWEEP).rows) == 2
    again = leaderboard(store, "sw", "sw-second")
    assert again.rows == [] and again.winner is None
