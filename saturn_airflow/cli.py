"""The `saturn` command: plan, show, simulate, profile (docs/contracts.md, CLI).

Bad input of any kind exits with status 2 and one line on stderr naming the problem, and writes
nothing; a missing optional component exits 1 with one line. Set SATURN_DEBUG=1 for tracebacks.
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
    si = sub.add_parser("simulate", help="replay a plan along its GPU hand-over edges, optionally with runtime noise")
    si.add_argument("plan")
    si.add_argument("--noise", type=_nonneg_float, default=0.0, help="lognormal sigma of runtime noise (0: exact)")
    si.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("profile", help="profile a workload on this machine (or its cluster)")
    pr.add_argument("workload")
    pr.add_argument("-o", "--output", help="write the profile table JSON here")
    pr.add_argument("-v", "--verbose", action="store_true")
    return p


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


def cmd_show(args) -> int:
    from saturn_airflow.views.gantt import render

    _check_writable(args.html)
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
    if args.html:
        try:
            from saturn_airflow.views.gantt_html import render_html
        except ImportError as e:
            raise _ComponentMissing(f"HTML rendering is not available ({e})")
        baseline = None
        if table is not None:  # the table gives every lane and the current-practice figure
            from saturn_airflow.planner import plan_table

            baseline = plan_table(table, baseline="current-practice", workload=plan.workload).makespan_s
        _write_atomic(args.html, render_html(plans=[plan], progress=None, baseline_makespan_s=baseline,
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


COMMANDS = {"plan": cmd_plan, "show": cmd_show, "simulate": cmd_simulate, "profile": cmd_profile}


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
