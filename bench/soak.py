"""Seeded soak of the closed loop: random workloads and random faults through the real scheduler.

    .venv/bin/python bench/soak.py --seed 1 --rounds 50 [--log /tmp/soak.log] [--out bench/results/soak.jsonl]

One Airflow (scheduler, dag-processor, triggerer, api-server; LocalExecutor) is kept up across
rounds. Each round draws, from `--seed` and its index, a workload of 2-6 jobs built from the example
models (GPT and ViT at random sizes, batch sizes, steps, optimizers AdamW / SGD with momentum, a
random subset of the built-in parallelisms per job) on this machine's 2 CPU devices, and faults
injected through the example data factory's knobs (saturn_airflow/examples/data.py): a slowdown or a
stall (the drifts), SIGKILL of one rank, a SIGTERM of a whole launch from outside (a preemption that
no plan asked for), an exception in a step. It runs the round through the planning DAG and every
plan version's DAG it leads to, and then checks:

  done-once      every job finished exactly once (the events log), and every DAG run succeeded
  loss           each job's final loss equals an uninterrupted reference run of the same job
                 (one device, in the soak's process; the data is deterministic in the step)
  leases         no device id was leased to two holders at once (the lease history)
  replans        at most one re-plan per injected drift, none in a round without one
  lost-work      a restart resumed at most one checkpoint interval (plus one progress record) behind
                 the step the killed launch had reached (the per-step loss logs)

Pipeline jobs get faults and drift like any other; `--no-pipeline-faults` keeps pipeline out of
faulted jobs and of every job in a round with a drift (how the soak ran while resuming pipeline ->
pipeline failed with KeyError 'betas', before the checkpoint fix). Results: one JSON line per round
in `--out`, a summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import yaml  # noqa: E402

N_DEVICES = 2
CKPT_EVERY_S = 5.0
PROGRESS_EVERY_S = 3.0  # the runner's default record interval
DRIFT = ("slow", "stall")
FAULTS = ("kill", "term", "fail")
LOSS_RTOL = 2e-3  # reduction order (ddp/fsdp all-reduce, pipeline micro-batches) vs one device

# the example models at sizes a CPU core trains in seconds; few shapes (and one batch size per model),
# so after the first rounds the profile cache answers (the cache key has model, shapes, optimizer type)
LM = [{"size": "tiny", "vocab": 256, "seq_len": 16}, {"size": "tiny", "vocab": 512, "seq_len": 32},
      {"d_model": 48, "n_layers": 2, "n_heads": 2, "vocab": 256, "seq_len": 32}]
VIT = [{"size": "tiny", "image_size": 16, "patch": 4},
       {"d_model": 48, "n_layers": 3, "n_heads": 2, "image_size": 16, "patch": 4}]
PARALLELISMS = ["single", "ddp", "fsdp", "pipeline"]


def airflow_env() -> dict[str, str]:
    """The settings a soak (and the e2e tests) run Airflow with: short polls and checkpoints, quick
    trials, and tasks that outlive a slow or restarting api-server (on a loaded 2-core box a restart
    takes a minute; by default calls time out after 5 s and 3 missed heartbeats end a task). The
    scheduler's task heartbeat timeout stays at its default (300 s): a killed task process is reported
    at once by its supervisor, and a shorter timeout fails live tasks while the api-server is away."""
    return {"AIRFLOW__SATURN__DRIFT_POLL_S": "3", "AIRFLOW__SATURN__CHECKPOINT_EVERY_S": str(CKPT_EVERY_S),
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60", "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
            "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "40",
            "SATURN_PROFILE_WARMUP": "2", "SATURN_PROFILE_MEASURE": "3", "SATURN_PROFILE_MEASURE_S": "0.5"}


# ------------------------------------------------------------------------------------------ drawing
def draw_round(seed: int, rnd: int, fault_root: str, *, pipeline_resume: bool = True, max_jobs: int = 6,
               max_steps: int = 240, drift: Optional[bool] = None, lm_shapes: Optional[list] = None,
               vit_shapes: Optional[list] = None, parallelisms: Optional[list] = None) -> dict:
    """Round `rnd` of seed `seed`: {"workload": dict, "faults": {job: kind}, "drifts": n, "params": {...}}.
    `lm_shapes`, `vit_shapes`, `parallelisms` narrow the menus (a short CI round reuses cached profiles)."""
    rng = random.Random(seed * 100_003 + rnd)
    lm_menu, vit_menu, par_menu = lm_shapes or LM, vit_shapes or VIT, parallelisms or PARALLELISMS
    name = f"soak-s{seed}-r{rnd}"
    n = rng.randint(2, max_jobs)
    with_drift = rng.random() < 0.5 if drift is None else drift
    drift_job = rng.randrange(n) if with_drift else None
    jobs, faults = [], {}
    for i in range(n):
        lm = rng.random() < 0.5
        steps = rng.randrange(60, max_steps + 1, 10)
        job: dict[str, Any] = {"name": f"j{i}-{'lm' if lm else 'vit'}"}
        if lm:
            args = dict(rng.choice(lm_menu))
            job.update(model="saturn_airflow.examples.models:gpt", model_args=args,
                       data="saturn_airflow.examples.data:tokens",
                       data_args={"seq_len": args["seq_len"], "vocab": args["vocab"], "seed": rng.randrange(1000)})
        else:
            args = dict(rng.choice(vit_menu))
            job.update(model="saturn_airflow.examples.models:vit", model_args=args,
                       data="saturn_airflow.examples.data:images",
                       data_args={"image_size": args["image_size"], "seed": rng.randrange(1000)})
        job["batch_size"] = 8 if lm else 16
        job["steps"] = steps
        if rng.random() < 0.5:
            job["optimizer"] = {"name": "adamw", "lr": rng.choice([1e-3, 3e-3])}
        else:
            job["optimizer"] = {"name": "sgd", "lr": rng.choice([0.01, 0.05]), "momentum": 0.9}
        kind = None
        if i == drift_job:
            kind = rng.choice(DRIFT)
        elif rng.random() < 0.35:
            kind = rng.choice(FAULTS)
        pars = [p for p in par_menu if rng.random() < 0.6] or [rng.choice([p for p in par_menu if p != "pipeline"])]
        if not pipeline_resume and (with_drift or kind is not None):
            pars = [p for p in pars if p != "pipeline"] or ["single"]
        job["parallelisms"] = pars
        if kind is not None:
            fd = os.path.join(fault_root, name, job["name"])
            at = rng.randrange(steps // 4, steps // 2)
            da = job["data_args"]
            da["fault_dir"] = fd
            if kind == "slow":  # the rest of the job 70-90 s slower than profiled
                da.update(slow_after_step=at, slow_step_s=round(rng.uniform(70, 90) / (steps - at), 3))
            elif kind == "stall":
                da.update(stall_at_step=at, stall_s=round(rng.uniform(90, 110), 1))
            elif kind == "kill":
                da.update(kill_at_step=at)
            elif kind == "term":
                da.update(term_at_step=at)
            else:
                da.update(fail_at_step=at, fail_times=1)
            faults[job["name"]] = {"kind": kind, "at": at}
        jobs.append(job)
    wl = {"name": name, "cluster": {"nodes": [{"name": "local", "gpus": N_DEVICES, "gpu_type": "cpu"}]},
          "parallelisms": list(par_menu), "jobs": jobs}
    return {"seed": seed, "round": rnd, "workload": wl, "faults": faults,
            "drifts": sum(1 for f in faults.values() if f["kind"] in DRIFT),
            # a restart after a kill costs ~20-30 s here (retry delay, scheduling, start-up): below the
            # 45 s, so only the injected drifts (70-110 s) should re-plan
            "params": {"drift_threshold": 0.15, "drift_min_s": 45, "time_limit": 5}}


FAULT_KEYS = ("fault_dir", "slow_after_step", "slow_step_s", "slow_factor", "slow_after_file", "warmup_slow_s",
              "warmup_step_s", "warmup_factor", "stall_at_step", "stall_s", "kill_at_step", "term_at_step",
              "fail_at_step", "fail_times")


def clean_job(job: dict) -> dict:
    """The job without its fault knobs (what the reference run trains)."""
    j = json.loads(json.dumps(job))
    j["data_args"] = {k: v for k, v in j.get("data_args", {}).items() if k not in FAULT_KEYS}
    return j


# ------------------------------------------------------------------------------------------ running
def planning_runs(af, limit: int = 50) -> list[dict]:
    """The newest runs of the planning DAG (a long soak has more than one page of them)."""
    return af.api("GET", "/dags/saturn_plan/dagRuns", params={"limit": limit, "order_by": "-run_after"})["dag_runs"]


def run_round(af, spec: dict, wl_dir: str, *, timeout_s: float = 1500.0, log=print) -> dict:
    """Trigger the planning DAG for the round's workload and wait for every plan version's DAG run."""
    from saturn_airflow.store.files import PlanStore, ProgressStore, Store

    wl = spec["workload"]
    path = os.path.join(wl_dir, f"{wl['name']}.yaml")
    Path(path).write_text(yaml.safe_dump(wl, sort_keys=False))
    t0 = time.time()
    run_id = af.trigger("saturn_plan", {"workload": path, **spec["params"]})
    state = af.wait_run("saturn_plan", run_id, timeout_s=timeout_s)
    out: dict[str, Any] = {"planning": state, "planning_s": time.time() - t0, "runs": {}}
    if state != "success":
        out["error"] = f"planning run {run_id} {state}"
        return out
    store = Store(af.saturn_home)
    ps = PlanStore(store)
    jobs = {j["name"] for j in wl["jobs"]}
    prog = None
    deadline = t0 + timeout_s
    while time.time() < deadline:
        plans = [p for p in ps.plans() if p.workload == wl["name"]]
        finished = True
        for p in plans:
            if p.plan_id in out["runs"] and out["runs"][p.plan_id] in ("success", "failed"):
                continue
            d = af.dag(f"saturn_run__{p.plan_id}")
            runs = af.runs(f"saturn_run__{p.plan_id}") if d else []
            if not runs:
                finished = False
                continue
            out["runs"][p.plan_id] = runs[0]["state"]
            finished &= runs[0]["state"] in ("success", "failed")
        replans = [r for r in planning_runs(af) if (r.get("conf") or {}).get("replan_of") in {p.plan_id for p in plans}]
        finished &= all(r["state"] in ("success", "failed") for r in replans)
        if prog is None and plans:
            prog = ProgressStore(store, sweep=plans[0].sweep)
        recs = prog.all(wl["name"]) if prog is not None else {}
        if finished and plans and all(p.plan_id in out["runs"] for p in plans) and (
                all((recs.get(j) or {}).get("state") == "done" for j in jobs) or
                all(s in ("success", "failed") for s in out["runs"].values())):
            break
        time.sleep(5)
    else:
        out["error"] = f"round did not finish within {timeout_s:.0f} s"
    out["wall_s"] = time.time() - t0
    out["replan_runs"] = {r["dag_run_id"]: r["state"] for r in planning_runs(af)
                          if (r.get("conf") or {}).get("replan_of") in {p.plan_id for p in ps.plans()
                                                                          if p.workload == wl["name"]}}
    return out


# ------------------------------------------------------------------------------------------ checking
def read_loss_log(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def launches(entries: list[dict]) -> list[dict]:
    """The loss log as launches: [{"start": K, "t": ..., "steps": {step: (loss, t)}}]."""
    out: list[dict] = []
    for e in entries:
        if "start" in e:
            out.append({"start": e["start"], "t": e["t"], "parallelism": e.get("parallelism"), "steps": {}})
        elif out:
            out[-1]["steps"][e["step"]] = (e["loss"], e.get("t"))
    return out


def lost_work(entries: list[dict], every_s: float) -> list[str]:
    """Restarts that resumed further back than one checkpoint interval (plus one step's slack)."""
    bad = []
    ls = launches(entries)
    for prev, nxt in zip(ls, ls[1:]):
        if not prev["steps"]:
            continue
        last = max(prev["steps"])  # the last step the killed launch finished (0-based)
        resumed = nxt["start"]  # the first step the next launch trains
        if resumed > last + 1:
            bad.append(f"resumed at step {resumed} past the last trained step {last}")
            continue
        t_last = prev["steps"][last][1]
        # the checkpoint it resumed from was taken right after step resumed-1 (or before this launch began)
        t_resume = prev["steps"][resumed - 1][1] if (resumed - 1) in prev["steps"] else prev["t"]
        if t_last is not None and t_resume is not None and t_last - t_resume > every_s + 2.0:
            bad.append(f"restart lost {last + 1 - resumed} steps ({t_last - t_resume:.1f} s of work, "
                       f"checkpoint interval {every_s:.0f} s)")
    return bad


def reference_final_loss(job: dict, cache_dir: str) -> float:
    """The job's final loss trained without interruption on one device, in this process (one thread,
    like a rank), from the job without its fault knobs; cached by the job's content."""
    import hashlib

    import torch

    from saturn_airflow.execution.devices import Devices
    from saturn_airflow.parallelisms import get_parallelism
    from saturn_airflow.spec.workload import parse_workload

    clean = clean_job(job)
    clean.pop("parallelisms", None)
    key = hashlib.sha256(json.dumps({k: v for k, v in clean.items() if k != "name"}, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{key}.json")
    if os.path.exists(path):
        return json.loads(Path(path).read_text())["final_loss"]
    clean["name"] = "ref"
    spec = parse_workload({"name": "soak-ref", "jobs": [clean]}).job("ref")
    torch.set_num_threads(1)
    trainer = get_parallelism("single").build(spec, Devices(ids=[0], kind="cpu", device=torch.device("cpu")), {})
    final = None
    for step in range(spec.steps):
        final = float(trainer.step(step))
    os.makedirs(cache_dir, exist_ok=True)
    Path(path).write_text(json.dumps({"final_loss": final, "job": clean}))
    return final


def check_round(af, spec: dict, outcome: dict, ref_dir: str) -> tuple[list[str], dict]:
    """The invariants of one round: (violations, measurements)."""
    from saturn_airflow.execution import leases
    from saturn_airflow.execution.launch import LOSS_LOG, checkpoint_root
    from saturn_airflow.store.files import PlanStore, ProgressStore, Store
    from saturn_airflow.tasks import events as job_events

    wl = spec["workload"]
    name = wl["name"]
    store = Store(af.saturn_home)
    bad: list[str] = []
    stats: dict[str, Any] = {}
    if outcome.get("error"):
        bad.append(outcome["error"])
    for pid, st in outcome.get("runs", {}).items():
        if st != "success":
            bad.append(f"DAG run of plan {pid} ended {st}")
    # done exactly once
    plans = [p for p in PlanStore(store).plans() if p.workload == name]
    sweep = plans[0].sweep if plans else None
    ends = [e for e in job_events.events(store, name, sweep) if e["event"] == "end"] if sweep else []
    for j in wl["jobs"]:
        n_done = sum(1 for e in ends if e["job"] == j["name"] and e["status"] == "done")
        if n_done != 1:
            bad.append(f"{j['name']} finished {n_done} times")
        spans = sorted((e["started_at"], e["ended_at"]) for e in ends if e["job"] == j["name"])
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            bad.append(f"{j['name']} ran twice at once: {spans}")
    recs = ProgressStore(store, sweep=sweep).all(name) if sweep else {}
    for j in wl["jobs"]:
        rec = recs.get(j["name"]) or {}
        if rec.get("state") != "done":
            bad.append(f"{j['name']} ends {rec.get('state')}: {rec.get('error') or ''}".strip())
    # no device leased twice
    over = leases.overlaps(leases.history(store))
    bad += [f"lease overlap: {o}" for o in over]
    # re-plans: every drift event the watches fired (a re-plan run), published or not
    replans = len(outcome.get("replan_runs") or {})
    stats["replans"] = replans
    stats["versions"] = len(plans)
    stats["replan_reasons"] = [(p.model_extra or {}).get("reason") for p in plans if p.parent_plan_id]
    if replans > spec["drifts"]:
        bad.append(f"{replans} re-plans for {spec['drifts']} injected drifts: {stats['replan_reasons'] or 'nothing published'}")
    # losses and lost work
    diffs = {}
    for j in wl["jobs"]:
        entries = read_loss_log(os.path.join(checkpoint_root(store.url, name, j["name"], sweep=sweep or "-"), LOSS_LOG))
        ls = launches(entries)
        stats.setdefault("launches", {})[j["name"]] = [(x["start"], x["parallelism"]) for x in ls]
        bad += [f"{j['name']}: {m}" for m in lost_work(entries, CKPT_EVERY_S)]
        if not ls or (j["steps"] - 1) not in ls[-1]["steps"]:
            continue
        got = ls[-1]["steps"][j["steps"] - 1][0]
        try:
            ref = reference_final_loss(j, ref_dir)
        except Exception as e:  # noqa: BLE001 - a broken reference is a finding too
            bad.append(f"{j['name']}: reference run failed: {e}")
            continue
        rel = abs(got - ref) / max(abs(ref), 1e-12)
        diffs[j["name"]] = rel
        if rel > LOSS_RTOL:
            bad.append(f"{j['name']}: final loss {got:.6f} vs uninterrupted {ref:.6f} (rel {rel:.2e})")
    stats["loss_rel_diff_max"] = max(diffs.values(), default=None)
    stats["loss_rel_diff"] = {j: float(f"{d:.3g}") for j, d in diffs.items()}  # which job the max comes from
    return bad, stats


# ------------------------------------------------------------------------------------------ summary
def summarize(paths: list[str]) -> str:
    """The rounds of one or more result files as a markdown summary (docs/benchmarks-soak.md)."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    kinds: dict[str, int] = {}
    for r in rows:
        for fault in r.get("faults", {}).values():
            kinds[fault["kind"]] = kinds.get(fault["kind"], 0) + 1
    bad = [r for r in rows if r.get("violations")]
    walls = sorted(r.get("wall_s", 0) for r in rows)
    diffs = [r["loss_rel_diff_max"] for r in rows if r.get("loss_rel_diff_max") is not None]
    seeds = sorted({r["seed"] for r in rows})
    restarts = sum(len(ls) - 1 for r in rows for ls in (r.get("launches") or {}).values())
    wall = f"{statistics.median(walls):.0f} s ({walls[0]:.0f}-{walls[-1]:.0f} s)" if walls else "-"
    out = ["| rounds | seeds | jobs | faults injected | restarts | drifts | re-plans | violations | round wall (median) "
           "| max final-loss rel. diff |",
           "|---|---|---|---|---|---|---|---|---|---|",
           f"| {len(rows)} | {', '.join(map(str, seeds))} | {sum(r.get('jobs', 0) for r in rows)} | "
           + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + f" | {restarts} | "
           f"{sum(r.get('drifts', 0) for r in rows)} | {sum(r.get('replans') or 0 for r in rows)} | "
           f"{sum(len(r['violations']) for r in rows)} in {len(bad)} rounds | {wall} | {max(diffs) if diffs else 0:.1e} |"]
    for r in bad:
        out.append(f"- seed {r['seed']} round {r['round']}: " + " | ".join(r["violations"]))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--first-round", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON lines, one per round (default: bench/results/soak-<seed>.jsonl)")
    ap.add_argument("--log", default=None, help="progress log file (default: stdout)")
    ap.add_argument("--no-pipeline-faults", action="store_true",
                    help="no faults or drift for jobs that may run as pipeline (before the pipeline resume fix)")
    ap.add_argument("--max-jobs", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=240)
    ap.add_argument("--work", default=None, help="folder for workloads, fault markers and references")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--keep-home", action="store_true")
    ap.add_argument("--profiles", default=None, help="a folder to keep the profile cache in across soak runs")
    ap.add_argument("--summarize", nargs="+", metavar="RESULTS", help="print a summary of result files and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    import signal

    from airflow_harness import AirflowHarness

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Airflow (finally below) on a plain kill

    out_path = args.out or str(ROOT / "bench" / "results" / f"soak-{args.seed}.jsonl")
    logf = open(args.log, "a") if args.log else sys.stdout

    def log(msg: str) -> None:
        logf.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        logf.flush()

    work = args.work or tempfile.mkdtemp(prefix="saturn-soak-")
    wl_dir, faults, refs = (os.path.join(work, d) for d in ("workloads", "faults", "refs"))
    for d in (wl_dir, faults, refs):
        os.makedirs(d, exist_ok=True)
    af = AirflowHarness(parallelism=4, env=airflow_env(), port=args.port, keep_home=args.keep_home)
    if args.profiles:  # trials already measured on this machine need not be measured again
        os.makedirs(args.profiles, exist_ok=True)
        os.makedirs(af.saturn_home, exist_ok=True)
        os.symlink(os.path.abspath(args.profiles), os.path.join(af.saturn_home, "profiles"))
    t = time.time()
    totals = {"rounds": 0, "violations": 0, "replans": 0, "drifts": 0}
    try:
        af.start()
        log(f"Airflow up in {time.time() - t:.0f} s at {af.url} (home {af.home}, pids {af.pids()})")
        af.wait_dag("saturn_plan", timeout_s=300)
        for rnd in range(args.first_round, args.first_round + args.rounds):
            spec = draw_round(args.seed, rnd, faults, pipeline_resume=not args.no_pipeline_faults,
                              max_jobs=args.max_jobs, max_steps=args.max_steps)
            desc = ", ".join(f"{j['name']}[{'/'.join(j['parallelisms'])}] {j['steps']} steps"
                             + (f" {spec['faults'][j['name']]['kind']}@{spec['faults'][j['name']]['at']}"
                                if j["name"] in spec["faults"] else "") for j in spec["workload"]["jobs"])
            log(f"round {rnd}: {desc}")
            t_r = time.time()
            try:
                outcome = run_round(af, spec, wl_dir, log=log)
                bad, stats = check_round(af, spec, outcome, refs)
            except Exception as e:  # noqa: BLE001 - a crash of the soak itself is recorded, then we go on
                outcome, stats = {}, {}
                bad = [f"soak error: {type(e).__name__}: {e}"]
                log(traceback.format_exc())
            row = {"seed": args.seed, "round": rnd, "jobs": len(spec["workload"]["jobs"]), "faults": spec["faults"],
                   "drifts": spec["drifts"], "violations": bad, "wall_s": round(time.time() - t_r, 1),
                   **{k: v for k, v in outcome.items() if k in ("planning_s", "runs", "replan_runs")}, **stats}
            with open(out_path, "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
            totals["rounds"] += 1
            totals["violations"] += len(bad)
            totals["replans"] += stats.get("replans", 0) or 0
            totals["drifts"] += spec["drifts"]
            log(f"round {rnd}: {'OK' if not bad else 'VIOLATIONS: ' + ' | '.join(bad)} "
                f"({row['wall_s']:.0f} s, re-plans {stats.get('replans')}, drifts {spec['drifts']}, "
                f"max loss diff {stats.get('loss_rel_diff_max')})")
    finally:
        af.stop()
        log(f"soak seed {args.seed}: {totals}")
    return 0 if totals["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
