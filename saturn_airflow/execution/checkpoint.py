"""Checkpoints with torch.distributed.checkpoint: model, optimizer, step (= data position).

Layout under a job's checkpoint root:
  step-000000120-<run>/   one DCP directory per checkpoint (`.metadata` written last = complete)
  latest.json             atomic pointer {"dir", "step", "parallelism", "world_size", "time"}
Why a new directory each time plus a pointer: a rank killed mid-save (SIGKILL) leaves a partial
directory nobody points at, so at most one checkpoint interval of work is lost. DCP stores
parameters by their fully-qualified names, so a checkpoint written under one parallelism and
world size loads under any other (resharding).

The root is a local folder or any fsspec URL (file://, s3://, gs://, a shared mount): DCP writes a URL
through its fsspec storage writer and reader, so a job resumes on whichever node reaches the root.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

from saturn_airflow.store.atomic import write_atomic

DEFAULT_EVERY_S = 60.0  # wall seconds between checkpoints when nothing else is asked for
LATEST = "latest.json"


def run_id() -> str:
    """An id every rank of one launch shares (names this launch's checkpoint directories)."""
    return os.environ.get("SATURN_RUN_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or "run"


def is_url(root: str) -> bool:
    return "://" in str(root)


def _fs(root: str):
    """(filesystem, path inside it) of a checkpoint root; a plain path is the local filesystem."""
    import fsspec

    return fsspec.core.url_to_fs(root) if is_url(root) else (fsspec.filesystem("file"), root)


def local_folder(root: str) -> Optional[str]:
    """The local path of a checkpoint root (a plain path or a file:// URL), None for other filesystems."""
    if not is_url(root):
        return root
    return root[len("file://"):] if root.startswith("file://") else None


def join(root: str, *parts: str) -> str:
    """A path under `root` in root's own spelling (URLs keep their scheme; DCP picks fsspec for them)."""
    if is_url(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def read_latest(root: str) -> Optional[dict]:
    """The latest complete checkpoint's pointer, or None (no pointer, or it names a missing dir)."""
    fs, base = _fs(root)
    try:
        with fs.open(f"{base.rstrip('/')}/{LATEST}", "rb") as f:
            ptr = json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not fs.exists(f"{base.rstrip('/')}/{ptr['dir']}/.metadata"):
        return None
    return ptr


def _write_pointer(root: str, data: str) -> None:
    """Move the pointer in one step: an atomic rename locally, one PUT on an object store."""
    if not is_url(root):
        write_atomic(os.path.join(root, LATEST), data)
        return
    fs, base = _fs(root)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        write_atomic(os.path.join(base, LATEST), data)
    else:
        fs.pipe_file(f"{base.rstrip('/')}/{LATEST}", data.encode())


class CheckpointManager:
    """Save/load a Trainer's state collectively (every rank calls), on a step or time schedule."""

    def __init__(self, root: str, *, devices=None, every_s: Optional[float] = DEFAULT_EVERY_S,
                 every_steps: Optional[int] = None, keep: int = 2, meta: Optional[dict] = None):
        self.root = root
        self.devices = devices
        self.every_s = every_s
        self.every_steps = every_steps
        self.keep = max(1, keep)
        self.meta = meta or {}
        self.last_save_t = time.monotonic()
        self.last_step: Optional[int] = None
        self.saves: list[float] = []  # seconds per save, for the profiler's and runner's accounting
        self.fs, self.base = _fs(root)
        self.fs.makedirs(self.base, exist_ok=True)

    # -- schedule (decided on rank 0, agreed through StopSignal.agree) --
    def due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0 and step != self.last_step:
            return True
        return self.every_s is not None and time.monotonic() - self.last_save_t >= self.every_s

    def latest_step(self) -> Optional[int]:
        ptr = read_latest(self.root)
        return ptr["step"] if ptr else None

    def size_bytes(self) -> int:
        ptr = read_latest(self.root)
        if not ptr:
            return 0
        return int(self.fs.du(f"{self.base.rstrip('/')}/{ptr['dir']}"))

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()

    # -- collective operations --
    def save(self, trainer, step: int) -> str:
        import torch.distributed.checkpoint as dcp

        t0 = time.perf_counter()
        name = f"step-{step:09d}-{run_id()}"
        path = join(self.root, name)
        main = self.devices is None or self.devices.is_main
        local = f"{self.base.rstrip('/')}/{name}"
        if main and self.fs.exists(local):  # a re-save of the same step in the same run: start clean
            self.fs.rm(local, recursive=True)
        self._barrier()
        dcp.save(trainer.state_dict(), checkpoint_id=path)
        self._barrier()  # every rank's shard is on disk before the pointer moves
        if main:
            ptr = {"dir": name, "step": step, "time": time.time(), **self.meta}
            _write_pointer(self.root, json.dumps(ptr))
            self._prune(keep_name=name)
        self._barrier()
        self.last_save_t = time.monotonic()
        self.last_step = step
        self.saves.append(time.perf_counter() - t0)
        return path

    def load(self, trainer) -> int:
        """Load the latest checkpoint into `trainer` (any layout); return its step, 0 if none."""
        import torch.distributed.checkpoint as dcp

        ptr = read_latest(self.root)
        self._barrier()
        if not ptr:
            return 0
        sd = trainer.state_dict()
        dcp.load(sd, checkpoint_id=join(self.root, ptr["dir"]))
        trainer.load_state_dict(sd)
        self.last_step = ptr["step"]
        self.last_save_t = time.monotonic()
        return int(ptr["step"])

    def _prune(self, keep_name: str) -> None:
        """Keep the newest `keep` complete checkpoints; drop older ones and abandoned partial ones."""
        base = self.base.rstrip("/")
        entries = self.fs.ls(base, detail=True)
        dirs = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
        dirs = [d for d in dirs if d.startswith("step-")]
        complete = [d for d in dirs if self.fs.exists(f"{base}/{d}/.metadata")]
        # newest by step, then by name (the run id breaks a tie between two runs that saved one step)
        keep = set(sorted(complete, key=lambda d: (int(d.split("-")[1]), d))[-self.keep:])
        keep.add(keep_name)
        for d in dirs:
            if d not in keep:
                try:
                    self.fs.rm(f"{base}/{d}", recursive=True)
                except FileNotFoundError:
                    pass
