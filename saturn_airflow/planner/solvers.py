"""Running a Pyomo model on HiGHS (appsi, in-process, warm start) or CBC (pulp's bundled 2.10.3 binary).

Solver output is never trusted blindly (solvers can report success with a partial or fractional point): no solution is loaded unless the solver says it
has a feasible one, and callers re-verify integrality before using it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from typing import Optional

from saturn_airflow.errors import SaturnInputError

SOLVERS = ("highs", "cbc")
MIP_GAP = 1e-4


@dataclass
class SolveResult:
    solver: str
    termination: str
    has_solution: bool
    objective: Optional[float]
    bound: Optional[float]
    time_s: float


def cbc_path() -> str:
    """The CBC executable shipped inside the `pulp` wheel (2.10.3, static), else one on PATH."""
    try:
        import pulp

        path = os.path.join(os.path.dirname(pulp.__file__), "solverdir", "cbc", "linux", "i64", "cbc")
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):  # some installers drop the exec bit
                try:
                    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                except OSError:
                    pass
            if os.access(path, os.X_OK):
                return path
    except ImportError:
        pass
    found = shutil.which("cbc")
    if not found:
        raise SaturnInputError("solver cbc: no cbc executable (install pulp<4, which bundles it); use --solver highs")
    return found


def _quiet_pyomo():
    logging.getLogger("pyomo").setLevel(logging.ERROR)


def solve_highs(model, time_limit: float, mip_gap: float = MIP_GAP) -> SolveResult:
    from pyomo.contrib.appsi.solvers.highs import Highs

    _quiet_pyomo()
    opt = Highs()
    opt.config.time_limit = max(0.1, time_limit)
    opt.config.mip_gap = max(MIP_GAP, mip_gap)
    opt.config.load_solution = False
    opt.config.warmstart = True
    opt.config.stream_solver = False
    opt.highs_options = {"threads": 1, "random_seed": 0, "output_flag": False}
    t0 = time.monotonic()
    res = opt.solve(model)
    has = res.best_feasible_objective is not None
    if has:
        res.solution_loader.load_vars()
    return SolveResult("highs", str(res.termination_condition).split(".")[-1], has,
                       res.best_feasible_objective, res.best_objective_bound, time.monotonic() - t0)


def solve_cbc(model, time_limit: float, mip_gap: float = MIP_GAP) -> SolveResult:
    """CBC with a hard wall-clock limit. CBC can spend minutes in preprocessing that `-sec` cannot interrupt
    (measured: 136 s on a 30 s limit), so Pyomo's `timelimit` is used, which also kills the process on
    overrun. That loses CBC's incumbent, which is acceptable here: the caller keeps its warm
    start, which CBC cannot use on this model anyway (P7)."""
    import subprocess

    import pyomo.environ as pyo
    from pyomo.common.errors import ApplicationError
    from pyomo.opt import TerminationCondition as TC

    _quiet_pyomo()
    opt = pyo.SolverFactory("cbc", executable=cbc_path())
    opt.options.update({"timeMode": "elapsed", "ratioGap": max(MIP_GAP, mip_gap), "threads": 1})
    t0 = time.monotonic()
    try:
        res = opt.solve(model, load_solutions=False, warmstart=True, tee=False, timelimit=max(1, int(time_limit)))
    except (subprocess.TimeoutExpired, ApplicationError) as e:
        return SolveResult("cbc", f"killed at the time limit ({type(e).__name__})", False, None, None, time.monotonic() - t0)
    term = res.solver.termination_condition
    has = term in (TC.optimal, TC.maxTimeLimit, TC.feasible, TC.maxIterations, TC.maxEvaluations) and len(res.solution) > 0
    if has:
        model.solutions.load_from(res)
    bound = getattr(res.problem, "lower_bound", None)
    obj = pyo.value(model.obj) if has else None
    return SolveResult("cbc", str(term), has, obj, bound if isinstance(bound, (int, float)) else None, time.monotonic() - t0)


def solve(model, solver: str, time_limit: float, mip_gap: float = MIP_GAP) -> SolveResult:
    """Solve until `time_limit` seconds or a relative gap of `mip_gap` to the solver's own bound."""
    if solver == "highs":
        return solve_highs(model, time_limit, mip_gap)
    if solver == "cbc":
        return solve_cbc(model, time_limit, mip_gap)
    raise SaturnInputError(f"unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
