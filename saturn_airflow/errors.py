"""The one exception type user-facing code turns into a one-line message and exit status 2."""

from __future__ import annotations


class SaturnInputError(ValueError):
    """Bad input (a workload, profile table or plan). The message is one line naming the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def pydantic_message(source: str, exc) -> str:
    """One line from a pydantic ValidationError: the first error's field path and message."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc + ': ' if loc else ''}{msg}{extra}"
