"""The parallelism library: a registry of Parallelism classes fed by an entry-point group.

A user adds a parallelism with a subclass of `Parallelism` and one line in their pyproject:

    [project.entry-points."saturn_airflow.parallelisms"]
    my-tp = "my_pkg.tp:TensorParallel"

(docs/parallelisms.md has a worked example.) Loading is lazy: importing this package imports no torch.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from saturn_airflow.errors import NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from saturn_airflow.parallelisms.base import Parallelism

PARALLELISM_GROUP = "saturn_airflow.parallelisms"
# The built-ins, as pyproject.toml's entry points declare them (for a source tree never pip-installed).
BUILTIN = {
    "single": "saturn_airflow.parallelisms.single:Single",
    "ddp": "saturn_airflow.parallelisms.ddp:DDP",
    "fsdp": "saturn_airflow.parallelisms.fsdp:FSDP",
    "pipeline": "saturn_airflow.parallelisms.pipeline:Pipeline",
    "spilling": "saturn_airflow.parallelisms.spilling:Spilling",
}
ENV_EXTRA = "SATURN_PARALLELISMS"  # "name=module:Class,...": runtime registrations, inherited by launched ranks


def registry() -> dict[str, str]:
    """name -> "module:Class" for every registered parallelism (entry points, else the built-ins)."""
    found = {ep.name: ep.value for ep in entry_points(group=PARALLELISM_GROUP)}
    if not found:  # running from a source tree that was never pip-installed
        found = dict(BUILTIN)
    for item in filter(None, os.environ.get(ENV_EXTRA, "").split(",")):
        n, _, t = item.partition("=")
        found[n.strip()] = t.strip()
    return found


def register(name: str, target: str) -> None:
    """Register `module:Class` under `name` in this process and the ranks it launches (tests, notebooks).

    Installed packages should use the entry point instead; this is for code that is not pip-installed.
    """
    items = [i for i in os.environ.get(ENV_EXTRA, "").split(",") if i and not i.startswith(name + "=")]
    os.environ[ENV_EXTRA] = ",".join(items + [f"{name}={target}"])


def _load(target: str):
    import importlib

    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


def get_parallelism(name: str) -> "Parallelism":
    """An instance of the parallelism registered under `name`; KeyError naming the known ones otherwise."""
    from saturn_airflow.parallelisms.base import Parallelism

    reg = registry()
    if name not in reg:
        raise NotFoundError(f"unknown parallelism {name!r} (registered: {', '.join(sorted(reg))})")
    cls = _load(reg[name])
    if not (isinstance(cls, type) and issubclass(cls, Parallelism)):
        raise TypeError(f"parallelism {name!r} -> {reg[name]} is not a subclass of saturn_airflow.parallelisms.base.Parallelism")
    inst = cls()
    inst.name = name
    return inst


__all__ = ["registry", "register", "get_parallelism"]
