"""The errors the engine raises on purpose, under one base class.

User-facing code (the CLI, the operators) turns each into one line: the CLI exits 2 for the ones that
mean "your input is wrong" (`USER_ERRORS`), and 1 with "internal error: ..." for anything else.
"""

from __future__ import annotations


class SaturnError(Exception):
    """Base of every error saturn-airflow raises deliberately. The message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class SaturnInputError(SaturnError, ValueError):
    """Bad input (a workload, profile table, plan or argument); the message names the problem."""


class InvalidPlanError(SaturnError, ValueError):
    """A plan that breaks the validity rules (overlapping GPUs, wrong runtimes, missing jobs, ...)."""


class NotFoundError(SaturnError, KeyError):
    """A named thing (plan, job, node, parallelism, staged plan, profile table) that is not there."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class AirflowApiError(SaturnError, RuntimeError):
    """Airflow's REST API refused or failed a call the provider needs (pools, login)."""


USER_ERRORS = (SaturnInputError, InvalidPlanError, NotFoundError)


def pydantic_message(source: str, exc) -> str:
    """One line from a pydantic ValidationError: the first error's field path and message."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc + ': ' if loc else ''}{msg}{extra}"
