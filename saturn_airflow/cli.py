"""The `saturn` command: plan, show, simulate, profile, train, results, export (docs/contracts.md, CLI).

Bad input of any kind exits with status 2 and one line on stderr naming the problem, and writes
nothing; a missing optional component exits 1 with one line. `train` also exits 75 when a signal
preempted the job (checkpoint written) and 1 when it failed. Set SATURN_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

from saturn_airflow.store.atomic import write_atomic
from saturn_airflow.errors import USER_ERRORS, SaturnInputError

EXAMPLE = "saturn_sweep.json"


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage and exits 2 on a bad flag; we want our one-line contract instead."""

    def error(self, message: str):
        raise SaturnInputError(f"{self.prog}: {message}")


class _ComponentMissing(RuntimeError):
    pass


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from saturn_airflow import settings
    from saturn_airflow.planner import BASELINES, SOLVERS

    p = _OneLineParser(prog="saturn", description="Plan sweeps of training jobs onto GPUs (Saturn's SPASE MILP).")
    sub = p.add_subparsers(dest="command", parser_class=_OneLineParser)
    pl = sub.add_parser("plan", help="plan a profile table (.json) or a workload (.yaml, profiled first)")
    pl.add_argument("input", nargs="?", help=f"profile table or workload; default: the bundled example ({EXAMPLE})")
    pl.add_argument("-o", "--output", help="write the plan JSON here")
    pl.add_argument("--solver", choices=SOLVERS, default=settings.solver())
    pl.add_argument("--time-limit", type=_positive_float, default=settings.time_limit(), help="seconds (default %(default)s)")
    pl.add_argument("--baseline", choices=BASELINES, help="plan with a named baseline instead of the MILP")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--width", type=int, default=72, help="chart width in characters")
    pl.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    sh = sub.add_parser("show", help="print a plan as a Gantt chart per GPU")
    sh.add_argument("plan")
    sh.add_argument("--table", help="also check the plan against this profile table (and, with --html, draw every GPU and the current-practice makespan)")
    sh.add_argument("--html", help="write a self-contained HTML page here")
    sh.add_argument("--width", type=int, default=72)
    sh.add_argument("--store", help="a store (path or URL): PLAN may be a plan id in it, and the jobs' progress, "
                                    "projected makespan and failures are shown from its records")
    si = sub.add_parser("simulate", help="replay a plan along its GPU hand-over edges, optionally with runtime noise")
    si.add_argument("plan")
    si.add_argument("--noise", type=_nonneg_float, default=0.0, help="lognormal sigma of runtime noise (0: exact)")
    si.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("profile", help="profile a workload on this machine (or its cluster)")
    pr.add_argument("workload")
    pr.add_argument("-o", "--output", help="write the profile table JSON here")
    pr.add_argument("-v", "--verbose", action="store_true")
    tr = sub.add_parser("train", help="train one job by hand, outside Airflow, resuming from its latest checkpoint")
    tr.add_argument("workload", help="workload file (.yaml)")
    tr.add_argument("--job", required=True, help="the job's name in the workload")
    tr.add_argument("--parallelism", required=True, help="a registered parallelism, e.g. ddp")
    tr.add_argument("--devices", required=True, help="device ids, comma separated, e.g. 0,1")
    tr.add_argument("--knobs", default="{}", help="the parallelism's knobs as a JSON object (default {})")
    tr.add_argument("--store", help="store URL (default: the store_url setting, $SATURN_HOME)")
    tr.add_argument("--stop-at-step", type=_step, help="stop (checkpoint written, exit 0) once this step is reached")
    tr.add_argument("--sweep", default=None,
                    help="whose checkpoints and progress records to use: a plan's sweep id to continue one of its "
                         "jobs by hand (default: by-hand, apart from every Airflow sweep)")
    tr.add_argument("-v", "--verbose", action="store_true",
                    help="stream every line of the ranks and torchrun (default: the [saturn] lines; the rest only on failure)")
    rs = sub.add_parser("results", help="the leaderboard of a sweep: jobs ranked by their held-out metric")
    rs.add_argument("target", help="a plan id in the store, a plan file (.json), a workload (.yaml) or a workload name")
    fmt = rs.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one row per job")
    rs.add_argument("--store", help="store URL (default: [saturn] store_url, $SATURN_HOME, $AIRFLOW_HOME/saturn)")
    rs.add_argument("--sweep", help="which sweep of a workload (default: a plan's own, else the workload's newest)")
    ex = sub.add_parser("export", help="write finished jobs' models as safetensors files, from their last checkpoint")
    ex.add_argument("target", help="a plan id in the store, a plan file (.json), a workload (.yaml) or a workload name")
    ex.add_argument("--job", action="append", help="only this job (repeatable); default: every finished job")
    ex.add_argument("--store", help="store URL (default: as for results)")
    ex.add_argument("--sweep", help="which sweep of a workload (default: as for results)")
    return p


def _step(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a step number, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a step number >= 1, got {text!r}")
    return v


# --- input and output -----------------------------------------------------------------------------
def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except IsADirectoryError:
        raise SaturnInputError(f"{path}: is a directory, expected a {what} file")
    except FileNotFoundError:
        raise SaturnInputError(f"{path}: no such file")
    except UnicodeDecodeError:
        raise SaturnInputError(f"{path}: not a text file (expected a {what})")
    except OSError as e:
        raise SaturnInputError(f"{path}: cannot read: {e.strerror}")


def _check_writable(path: Optional[str]) -> None:
    """Fail before any work if the output cannot be written, so bad input never leaves partial files."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise SaturnInputError(f"{path}: is a directory, expected a file path to write")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise SaturnInputError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SaturnInputError(f"{path}: directory {parent} is not writable")


def _write_atomic(path: str, text: str) -> None:
    write_atomic(path, text if text.endswith("\n") else text + "\n")


def _example_path() -> str:
    return str(resources.files("saturn_airflow.examples").joinpath(EXAMPLE))


def _profile(workload, verbose: bool):
    try:
        from saturn_airflow.profiling.profiler import profile_workload
    except ImportError as e:
        raise _ComponentMissing(f"the profiler is not available ({e}); plan a profile table (.json) instead")
    progress = (lambda msg: print(msg, file=sys.stderr)) if verbose else None
    return profile_workload(workload, progress=progress)


def load_plan_input(path: str, verbose: bool = False):
    """A profile table from a .json file, or a workload from .yaml/.yml profiled first. Returns (table, name)."""
    from saturn_airflow.spec.profile_table import parse_profile_table
    from saturn_airflow.spec.workload import parse_workload

    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        workload = parse_workload(_read_text(path, "workload"), source=path)
        return _profile(workload, verbose), workload.name
    if suffix != ".json":
        raise SaturnInputError(f"{path}: expected a profile table (.json) or a workload (.yaml/.yml)")
    text = _read_text(path, "profile table")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SaturnInputError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}")
    if isinstance(data, dict) and "assignments" in data:
        raise SaturnInputError(f"{path}: this is a plan, not a profile table (use `saturn show`)")
    table = parse_profile_table(data, source=path)
    name = data.get("workload") if isinstance(data.get("workload"), str) else Path(path).stem
    return table, name


def load_plan_file(path: str):
    """A plan JSON, checked for self-consistency (GPU overlaps, runtimes, makespan, `after`)."""
    from saturn_airflow.spec.plan import parse_plan

    text = _read_text(path, "plan")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SaturnInputError(f"{path}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}")
    if isinstance(data, dict) and "jobs" in data and "assignments" not in data:
        raise SaturnInputError(f"{path}: this is a profile table, not a plan (use `saturn plan`)")
    if not isinstance(data, dict):
        raise SaturnInputError(f"{path}: expected a plan JSON object, got {type(data).__name__}")
    plan = parse_plan(data, source=path)
    if not plan.assignments:
        raise SaturnInputError(f"{path}: plan has no assignments")
    bad = self_violations(plan)
    if bad:
        raise SaturnInputError(f"{path}: invalid plan: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return plan


def self_violations(plan) -> list[str]:
    """The plan validity rules (docs/contracts.md) that need no profile table: the plan against a table made from itself."""
    from saturn_airflow.spec.plan import plan_violations
    from saturn_airflow.spec.profile_table import ProfileTable

    nodes: dict[str, int] = {}
    for a in plan.assignments:
        nodes[a.node] = max(nodes.get(a.node, 1), max(a.gpu_ids, default=0) + 1)
    jobs: dict[str, dict] = {}
    for a in plan.assignments:
        if a.runtime_s <= 0:
            return [f"{a.job}: end_s {a.end_s} is not after start_s {a.start_s}"]
        jobs.setdefault(a.job, {"name": a.job, "configs": []})["configs"].append(
            {"parallelism": a.parallelism, "gpus": max(1, a.gpus), "runtime_s": a.runtime_s, "knobs": a.knobs})
    try:
        table = ProfileTable.model_validate({"cluster": {"nodes": [{"name": n, "gpus": g} for n, g in nodes.items()]},
                                             "jobs": list(jobs.values())})
    except Exception as e:  # e.g. a node name the cluster model rejects
        return [" ".join(str(e).split())[:200]]
    out = plan_violations(plan, table)
    names = [a.job for a in plan.assignments]
    dup = sorted({n for n in names if names.count(n) > 1})
    return ([f"job {dup[0]!r} appears {names.count(dup[0])} times"] if dup else []) + out


# --- commands -------------------------------------------------------------------------------------
def cmd_plan(args) -> int:
    from saturn_airflow.views.gantt import render
    from saturn_airflow.planner import plan_table

    _check_writable(args.output)
    path = args.input or _example_path()
    if not args.input:
        print(f"(no INPUT: planning the bundled example {EXAMPLE})", file=sys.stderr)
    table, name = load_plan_input(path, args.verbose)
    progress = (lambda msg: print(msg, file=sys.stderr)) if args.verbose else None
    plan = plan_table(table, solver=args.solver, time_limit=args.time_limit, baseline=args.baseline,
                      workload=name, seed=args.seed, progress=progress)
    print(render(plan, width=args.width, node_gpus={n.name: n.gpus for n in table.cluster.nodes}))
    if args.output:
        _write_atomic(args.output, plan.to_json())
        print(f"wrote {args.output}")
    return 0


def _store_lineage(store_url: str, ref: str):
    """The plan lineage (oldest first) of a plan id, or of a plan file's id, in a store."""
    from saturn_airflow.store.files import PlanStore, Store

    ps = PlanStore(Store(store_url))
    pid = ref
    if ref.endswith(".json") and os.path.exists(ref):
        pid = load_plan_file(ref).plan_id
    if pid not in ps.ids():
        raise SaturnInputError(f"no plan {pid!r} in store {store_url}")
    lineage = ps.lineage(pid)
    while ps.superseded_by(lineage[-1].plan_id):  # follow re-plans to the newest version
        lineage.append(ps.get(ps.superseded_by(lineage[-1].plan_id)))
    return ps, lineage


def progress_lines(data: dict) -> list[str]:
    """The jobs of a lineage's chart data (views.gantt_html.chart_data) as text: state, steps, the
    shared projection's ETA, and every failure with its reason."""
    from saturn_airflow.views.gantt_html import fmt_s

    newest = data["plans"][-1]
    sw = data["sweep"]
    out = [f"jobs: {sw['jobs_done']}/{sw['jobs']} done; re-plans {sw['replans']}; "
           + (f"actual makespan {fmt_s(sw['actual_makespan_s'])}" if sw["actual_makespan_s"] is not None else
              f"projected makespan {fmt_s(sw['projected_makespan_s'])}" if sw["projected_makespan_s"] is not None
              else "not started")]
    seen = {}
    for p in data["plans"]:
        for s_ in p["actual"]:
            seen[s_["job"]] = s_
    for a in sorted(newest["plan"]["assignments"], key=lambda a: (a["start_s"], a["job"])):
        seen.setdefault(a["job"], None)
    for job, sp in seen.items():
        if sp is None:
            out.append(f"  {job:<24} pending")
            continue
        steps = f"{sp['step']}/{sp['total']}" if sp.get("total") else "-"
        rate = f", {sp['steady_rate_steps_per_s']:.2f} steps/s" if sp.get("steady_rate_steps_per_s") else ""
        eta = f", ETA {fmt_s(sp['eta_end_s'] - sp['end_s'])}" if sp.get("eta_end_s") is not None else ""
        why = f": {sp['error']}" if sp.get("error") else ""
        out.append(f"  {job:<24} {sp['state']:<11} {steps}{rate}{eta}{why}")
    for job, why in sorted(sw["failed"].items()):
        out.append(f"FAILED {job}: {why} (clear its task in Airflow to resume it from its checkpoint)")
    return out


def cmd_show(args) -> int:
    from saturn_airflow.views.gantt import render

    _check_writable(args.html)
    lineage = progress = None
    if args.store:
        from saturn_airflow.store.files import ProgressStore

        ps, lineage = _store_lineage(args.store, args.plan)
        plan = lineage[-1]
        progress = ProgressStore(ps.store, sweep=plan.sweep).all(plan.workload)
    else:
        plan = load_plan_file(args.plan)
    node_gpus, table = None, None
    if args.table:
        from saturn_airflow.spec.plan import plan_violations

        table, _ = load_plan_input(args.table)
        bad = plan_violations(plan, table)
        if bad:
            raise SaturnInputError(f"{args.plan}: invalid against {args.table}: {bad[0]}")
        node_gpus = {n.name: n.gpus for n in table.cluster.nodes}
    print(render(plan, width=args.width, node_gpus=node_gpus))
    if lineage is not None:
        from saturn_airflow.views.gantt_html import chart_data, lineage_table

        tbl = lineage_table(ps.store, lineage)
        print("\n".join(progress_lines(chart_data(lineage, progress, cluster=tbl.cluster if tbl else None,
                                                   table=tbl))))
    if args.html:
        try:
            from saturn_airflow.views.gantt_html import render_html
        except ImportError as e:
            raise _ComponentMissing(f"HTML rendering is not available ({e})")
        baseline = None
        if table is not None:  # the table gives every lane and the current-practice figure
            from saturn_airflow.planner import plan_table

            baseline = plan_table(table, baseline="current-practice", workload=plan.workload).makespan_s
        _write_atomic(args.html, render_html(plans=lineage or [plan], progress=progress, baseline_makespan_s=baseline,
                                             cluster=table.cluster if table is not None else None))
        print(f"wrote {args.html}")
    return 0


def cmd_simulate(args) -> int:
    from saturn_airflow.planner.simulate import render_result, simulate

    plan = load_plan_file(args.plan)
    print(render_result(simulate(plan, noise=args.noise, seed=args.seed)))
    return 0


def cmd_profile(args) -> int:
    from saturn_airflow.spec.workload import parse_workload

    _check_writable(args.output)
    workload = parse_workload(_read_text(args.workload, "workload"), source=args.workload)
    table = _profile(workload, args.verbose)
    text = table.to_json()
    print(text)
    if args.output:
        _write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _sweep_target(target: str, store, sweep: Optional[str] = None):
    """(workload name, sweep, its jobs or None, the workload if a file was given) of a results/export
    target. A plan (id or file) names its sweep; a workload (file or name) means its newest sweep,
    unless `sweep` names one."""
    from saturn_airflow.spec.workload import parse_workload
    from saturn_airflow.store.files import PlanStore

    ps = PlanStore(store)
    suffix = Path(target).suffix.lower()
    if suffix in (".yaml", ".yml") or (suffix != ".json" and target not in ps.ids()):
        wl = None
        if suffix in (".yaml", ".yml"):
            wl = parse_workload(_read_text(target, "workload"), source=target)
            name = wl.name
        else:
            name = target
        sw = sweep or _newest_sweep(ps, store, name)
        if sw is None and wl is not None:
            from saturn_airflow.store.files import BY_HAND

            sw = BY_HAND  # a workload with nothing in the store yet: its jobs, none with results
        if sw is None:
            raise SaturnInputError(f"{target}: not a workload file, a plan file, a plan id or a workload name in {store.url}")
        plans = [p for p in ps.plans() if p.workload == name and p.sweep == sw]
        jobs = [j.name for j in wl.jobs] if wl is not None else (_lineage_jobs(ps, sw) if plans else None)
        return name, sw, jobs, wl
    plan = load_plan_file(target) if suffix == ".json" else ps.get(target)
    if plan.plan_id in ps.ids():
        plan = ps.get(plan.plan_id)  # the published copy knows its sweep
        return plan.workload, sweep or plan.sweep, _lineage_jobs(ps, plan.sweep), None
    return plan.workload, sweep or plan.sweep, [a.job for a in plan.assignments], None


def _newest_sweep(ps, store, workload: str) -> Optional[str]:
    """The sweep of the workload's newest plan; else the by-hand sweep if it has records."""
    from saturn_airflow.store.files import BY_HAND

    plans = sorted((p for p in ps.plans() if p.workload == workload), key=lambda p: (p.created_at, p.plan_id))
    if plans:
        return plans[-1].sweep
    if store.list(f"metrics/{workload}/{BY_HAND}") or store.list(f"progress/{workload}/{BY_HAND}"):
        return BY_HAND
    return None


def _lineage_jobs(ps, root: str) -> list[str]:
    """Every job of a sweep: the union over its plan versions, from the root to the newest re-plan."""
    jobs, pid, seen = [], root, set()
    while pid and pid not in seen and pid in ps.ids():
        seen.add(pid)
        jobs += [a.job for a in ps.get(pid).assignments if a.job not in jobs]
        pid = ps.superseded_by(pid)
    return jobs


def _store(url: Optional[str]):
    from saturn_airflow import settings
    from saturn_airflow.store.files import Store

    return Store(url or settings.store_url())


def cmd_results(args) -> int:
    from saturn_airflow.views.leaderboard import leaderboard, render_csv, render_json, render_text

    store = _store(args.store)
    name, sweep, jobs, _ = _sweep_target(args.target, store, args.sweep)
    board = leaderboard(store, name, sweep, jobs)
    if args.json:
        print(render_json(board))
    elif args.csv:
        sys.stdout.write(render_csv(board))
    else:
        print(render_text(board))
    return 0


def cmd_export(args) -> int:
    from saturn_airflow.execution.launch import checkpoint_root
    from saturn_airflow.spec.workload import JobSpec
    from saturn_airflow.store.files import PlanStore, ProgressStore
    from saturn_airflow.store.metrics import MetricsStore

    store = _store(args.store)
    name, sweep, jobs, wl = _sweep_target(args.target, store, args.sweep)
    progress = ProgressStore(store, sweep=sweep).all(name)
    results = MetricsStore(store, sweep=sweep).all(name)
    wanted = args.job or [j for j in (jobs or sorted(set(progress) | set(results)))
                          if (progress.get(j) or {}).get("state") == "done"]
    if not wanted:
        raise SaturnInputError(f"{args.target}: no finished job to export (give --job NAME for another)")
    known = set(jobs or []) | set(progress) | set(results)
    for j in wanted:
        if j not in known:
            raise SaturnInputError(f"{args.target}: no job {j!r}")
    if not store.local:
        raise SaturnInputError(f"store {store.url} is not a local folder: checkpoints are read from local disk")
    try:
        from saturn_airflow.execution.export import export_from_checkpoint
    except ImportError as e:
        raise _ComponentMissing(f"export needs torch and safetensors ({e})")
    plan_workloads = {}
    for j in wanted:
        spec = None
        if wl is not None:
            spec = wl.job(j)
        elif (results.get(j) or {}).get("spec"):
            spec = JobSpec.model_validate(results[j]["spec"])
        else:  # a job that finished before results were recorded: its plan names the workload file
            pid = (progress.get(j) or {}).get("plan_id")
            path = None
            if pid and pid in PlanStore(store).ids():
                path = (PlanStore(store).get(pid).model_extra or {}).get("workload_path")
            if path and path not in plan_workloads and Path(path).exists():
                from saturn_airflow.spec.workload import load_workload

                plan_workloads[path] = load_workload(path)
            if path in plan_workloads:
                spec = plan_workloads[path].job(j)
        if spec is None:
            raise SaturnInputError(f"job {j!r}: its model is unknown (no results record); give the workload file instead")
        meta = export_from_checkpoint(spec, checkpoint_root(store.url, name, j, sweep=sweep), store, name, sweep,
                                      info={"plan_id": (progress.get(j) or {}).get("plan_id")})
        print(f"{j}: step {meta['step']} -> {meta['path']} ({meta['parameters']} parameters, {meta['bytes']} bytes)")
    return 0


def cmd_train(args) -> int:
    import collections
    import signal
    import threading

    from saturn_airflow.execution import by_hand
    from saturn_airflow.store.files import BY_HAND

    stop = threading.Event()  # SIGTERM or Ctrl-C: the ranks agree on a step, checkpoint, and we exit 75
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    held_back: collections.deque[str] = collections.deque(maxlen=60)  # torchrun's own lines: shown on failure

    def out(line: str) -> None:
        print(line, flush=True)

    def log(line: str) -> None:
        if args.verbose or line.startswith("[saturn]"):
            out(line)
        else:
            held_back.append(line)

    def err(message: str) -> None:
        for line in held_back:
            print(line, file=sys.stderr)
        print("saturn: error: " + " ".join(message.split()), file=sys.stderr, flush=True)

    try:
        hj = by_hand.prepare(args.workload, args.job, args.parallelism, args.devices, knobs=args.knobs,
                             store_url=args.store, sweep=args.sweep or BY_HAND, stop_at_step=args.stop_at_step)
        if stop.is_set():
            out(f"job {args.job}: preempted before it started; nothing was trained or written")
            return by_hand.EXIT_PREEMPTED
        return by_hand.train(hj, stop_event=stop, out=out, err=err, log=log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


COMMANDS = {"plan": cmd_plan, "show": cmd_show, "simulate": cmd_simulate, "profile": cmd_profile, "train": cmd_train,
            "results": cmd_results, "export": cmd_export}


def _fail(code: int, message: str) -> int:
    print("saturn: error: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        return _fail(2, str(e))
    except _ComponentMissing as e:
        return _fail(1, str(e))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    except SystemExit as e:  # --help exits 0 through argparse
        return int(e.code or 0) if isinstance(e.code, int) else 0
    except Exception as e:  # a bug, not bad input: still one line, unless debugging
        if os.environ.get("SATURN_DEBUG"):
            raise
        return _fail(1, f"internal error: {type(e).__name__}: {e} (set SATURN_DEBUG=1 for a traceback)")


if __name__ == "__main__":
    sys.exit(main())
