"""Stores: plans, progress records and claims under one root (a local folder or any fsspec URL).

Layout under the root:
  plans/<plan_id>.json            immutable plan versions (written once, atomically)
  superseded/<plan_id>.json       marker: a newer plan replaced this one (its unstarted jobs skip)
  claims/<name>.json              create-once records (e.g. "one re-plan per parent plan")
  progress/<workload>/<sweep>/<job>.json  the latest progress record of a job in one sweep
  checkpoints/<workload>/<sweep>/<job>/   the runner's checkpoints of a job in one sweep
  profiles/                       the profiler's cache

A sweep is one run of the planning DAG and its re-plans (`Plan.sweep`: the lineage's root plan id);
jobs run by hand (`saturn train`) belong to the sweep `BY_HAND` unless told otherwise.
Writes go to a temporary name and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from typing import Any, Iterator, Optional

import fsspec

from saturn_airflow.errors import NotFoundError
from saturn_airflow.store.atomic import write_atomic
from saturn_airflow.spec.plan import Plan, parse_plan

BY_HAND = "by-hand"  # the sweep of jobs trained outside any plan (`saturn train`, `run_job` in tests)


def default_store_url() -> str:
    """$SATURN_HOME, else $AIRFLOW_HOME/saturn, else ~/airflow/saturn."""
    if os.environ.get("SATURN_HOME"):
        return os.environ["SATURN_HOME"]
    for key in ("AIRFLOW__SATURN__STORE_URL",):
        if os.environ.get(key):
            return os.environ[key]
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.path.join(home, "saturn")


class Store:
    """A folder (local path or fsspec URL) with atomic JSON writes and create-once files."""

    def __init__(self, url: Optional[str] = None):
        self.url = url or default_store_url()
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def local_path(self, *parts: str) -> str:
        """A real filesystem path (checkpoints, leases); only for local stores."""
        if not self.local:
            raise ValueError(f"store {self.url} is not a local folder")
        return os.path.join(self.root, *parts)

    def write_json(self, rel: str, obj: Any) -> None:
        path = self.path(rel)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        data = json.dumps(obj, indent=1, sort_keys=False).encode()
        if self.local:
            write_atomic(path, data)
        else:  # object stores: a single PUT is atomic
            self.fs.pipe_file(path, data)

    def create_json(self, rel: str, obj: Any) -> bool:
        """Write `rel` only if it does not exist yet; True if this call created it (race-safe locally)."""
        path = self.path(rel)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        data = json.dumps(obj, indent=1).encode()
        if self.local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # atomic, fails if path exists, and the content is complete
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.fs.exists(path):
            return False
        try:
            with self.fs.open(path, "xb") as f:  # s3fs/gcsfs: conditional create
                f.write(data)
            return True
        except (FileExistsError, ValueError, NotImplementedError):
            return False

    def read_json(self, rel: str, default: Any = None) -> Any:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return default

    def append_jsonl(self, rel: str, record: dict) -> None:
        """Append one JSON line to the log `rel` (local stores only: a remote store keeps no logs).
        One small O_APPEND write, so lines of concurrent writers never interleave."""
        if not self.local:
            return
        path = self.local_path(*rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)

    def read_jsonl(self, rel: str) -> list[dict]:
        """Every record of the log `rel`, oldest first (none on a remote store or before the first)."""
        if not self.local:
            return []
        try:
            with open(self.local_path(*rel.split("/"))) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def list(self, rel_dir: str, suffix: str = ".json") -> list[str]:
        """Names (without suffix) of the files in `rel_dir`, sorted."""
        try:
            entries = self.fs.ls(self.path(rel_dir), detail=False)
        except FileNotFoundError:
            return []
        names = [posixpath.basename(e) for e in entries]
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix) and ".tmp-" not in n)


class PlanStore:
    """Versioned, immutable plans; a plan is never rewritten, only superseded by a child."""

    def __init__(self, store: Optional[Store] = None):
        self.store = store or Store()

    def publish(self, plan: Plan) -> Plan:
        """Store `plan` for good, with its sweep filled in (a root starts one, a child joins its parent's)."""
        if plan.sweep_id is None:
            plan = plan.model_copy(update={"sweep_id": self.sweep_of(plan.parent_plan_id) if plan.parent_plan_id
                                           else plan.plan_id})
        if not self.store.create_json(f"plans/{plan.plan_id}.json", plan.model_dump(mode="json")):
            raise FileExistsError(f"plan {plan.plan_id} already published (plans are immutable)")
        if plan.parent_plan_id:
            self.supersede(plan.parent_plan_id, by=plan.plan_id)
        return plan

    def get(self, plan_id: str) -> Plan:
        data = self.store.read_json(f"plans/{plan_id}.json")
        if data is None:
            raise NotFoundError(f"no plan {plan_id!r} in {self.store.url}")
        plan = parse_plan(data, source=f"plan {plan_id}")
        if plan.sweep_id is None and plan.parent_plan_id:  # published before plans recorded their sweep
            plan = plan.model_copy(update={"sweep_id": self.sweep_of(plan.parent_plan_id)})
        return plan

    def sweep_of(self, plan_id: str) -> str:
        """The sweep of a published plan; a parent that is not in the store is taken as the root."""
        try:
            return self.get(plan_id).sweep
        except NotFoundError:
            return plan_id

    def ids(self) -> list[str]:
        return self.store.list("plans")

    def plans(self) -> Iterator[Plan]:
        for pid in self.ids():
            yield self.get(pid)

    def supersede(self, plan_id: str, by: str) -> None:
        self.store.create_json(f"superseded/{plan_id}.json", {"plan_id": plan_id, "by": by, "at": time.time()})

    def superseded_by(self, plan_id: str) -> Optional[str]:
        rec = self.store.read_json(f"superseded/{plan_id}.json")
        return rec["by"] if rec else None

    def claim(self, name: str, owner: dict) -> bool:
        """Create-once claim, e.g. `replan-of-<plan_id>`: exactly one caller ever gets True."""
        return self.store.create_json(f"claims/{name}.json", {**owner, "at": time.time()})

    def lineage(self, plan_id: str) -> list[Plan]:
        """The plan and its ancestors, oldest first."""
        chain: list[Plan] = []
        pid: Optional[str] = plan_id
        while pid:
            p = self.get(pid)
            chain.append(p)
            pid = p.parent_plan_id
        return list(reversed(chain))


class ProgressStore:
    """Latest progress record per job of one sweep: step, total, rate, timestamps, state, plan_id.

    States and fields: saturn_airflow.spec.progress (ProgressRecord, JobState). A record is replaced
    whole on every write. Each sweep has its own records, so a job done in one sweep is still to do in
    the next.
    """

    def __init__(self, store: Optional[Store] = None, *, sweep: str):
        self.store = store or Store()
        self.sweep = sweep

    def _dir(self, workload: str) -> str:
        return f"progress/{workload}/{self.sweep}"

    def put(self, workload: str, job: str, record: dict) -> None:
        self.store.write_json(f"{self._dir(workload)}/{job}.json",
                              {**record, "job": job, "workload": workload, "sweep": self.sweep})

    def get(self, workload: str, job: str) -> Optional[dict]:
        return self.store.read_json(f"{self._dir(workload)}/{job}.json")

    def mark_ended(self, workload: str, job: str, *, state: str, plan_id: str, message: str, **fields: Any) -> None:
        """Record that a job's attempt ended where the runner could not say so itself (killed, or failed
        before it started): `interrupted` (a retry resumes it) or `failed` (for good, so the drift
        watch counts the job as finished instead of waiting forever)."""
        now = time.time()
        rec = self.get(workload, job) or {}
        self.put(workload, job, {**rec, **fields, "plan_id": plan_id, "state": str(state), "updated_at": now,
                                 "finished_at": now, "error": message[:500]})

    def mark_failed(self, workload: str, job: str, *, plan_id: str, message: str, **fields: Any) -> None:
        self.mark_ended(workload, job, state="failed", plan_id=plan_id, message=message, **fields)

    def all(self, workload: str) -> dict[str, dict]:
        return {name: self.get(workload, name) for name in self.store.list(self._dir(workload))}
