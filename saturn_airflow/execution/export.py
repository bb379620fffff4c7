"""A finished job's model as one consolidated safetensors file, loadable without torch.distributed.

Written from the job's latest checkpoint (torch.distributed.checkpoint reshards any layout, sharded
FSDP or pipeline stages, into the plain model in one process with no process group), so the runner
at the end of a job and `saturn export` for a job that finished earlier share one path.

Layout under the store root:
  models/<workload>/<sweep>/<job>/model.safetensors   the model's state dict, full tensors
  models/<workload>/<sweep>/<job>/model.json          how to rebuild it: import path, arguments, step, plan, metrics
The safetensors header carries the import path and arguments too, so the file alone is enough:

    import importlib, json, safetensors, safetensors.torch
    with safetensors.safe_open(path, "pt") as f:
        meta = f.metadata()
    mod, fn = meta["saturn.model"].split(":")
    model = getattr(importlib.import_module(mod), fn)(**json.loads(meta["saturn.model_args"]))
    model.load_state_dict(safetensors.torch.load_file(path))
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from typing import Any, Optional

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.store.files import Store

FORMAT = "saturn-model/1"
MODEL_FILE = "model.safetensors"
META_FILE = "model.json"


def export_rel(workload: str, sweep: str, job: str) -> str:
    return f"models/{workload}/{sweep}/{job}"


def read_export(store: Store, workload: str, sweep: str, job: str) -> Optional[dict]:
    """The export's description (model.json), with `path` set to the model file, or None."""
    try:
        with store.fs.open(store.path(export_rel(workload, sweep, job), META_FILE), "r") as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None
    if meta:
        meta["path"] = store.path(export_rel(workload, sweep, job), MODEL_FILE)
    return meta


def _write_meta(store: Store, rel: str, meta: dict) -> None:
    """model.json next to the model file, whole or not at all (a file, not a record: it travels with the
    model, e.g. into MLflow's artifacts)."""
    data = json.dumps(meta, indent=1, sort_keys=True).encode()
    target = store.path(rel, META_FILE)
    if not store.local:
        store.fs.pipe_file(target, data)  # one object PUT: readers see the old object or the new one
        return
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".json.tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _plain_tensors(model) -> dict:
    """The state dict as safetensors wants it: contiguous CPU tensors, none sharing memory (tied weights
    are written once per name, so `load_state_dict` fills every name)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[k] = t
    return out


def export_from_checkpoint(job, checkpoint_root: str, store: Store, workload: str, sweep: str,
                           info: Optional[dict[str, Any]] = None) -> dict:
    """Load `job`'s latest checkpoint into its plain model and write model.safetensors + model.json.

    Raises SaturnInputError (one line) when there is no complete checkpoint. Returns model.json's content.
    """
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    from saturn_airflow.execution.checkpoint import join as ckpt_join, read_latest
    from saturn_airflow.parallelisms.base import build_model

    ptr = read_latest(checkpoint_root)
    if ptr is None:
        raise SaturnInputError(f"job {job.name!r}: no complete checkpoint under {checkpoint_root}")
    t0 = time.perf_counter()
    model = build_model(job)
    sd = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized": exactly the intent here
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(sd, checkpoint_id=ckpt_join(checkpoint_root, ptr["dir"]), no_dist=True)
    model.load_state_dict(sd["model"])
    tensors = _plain_tensors(model)
    header = {"saturn.format": FORMAT, "saturn.model": job.model, "saturn.model_args": json.dumps(job.model_args),
              "saturn.job": job.name, "saturn.workload": workload, "saturn.sweep": sweep, "saturn.step": str(ptr["step"])}
    rel = export_rel(workload, sweep, job.name)
    target = store.path(rel, MODEL_FILE)
    store.fs.makedirs(store.path(rel), exist_ok=True)
    folder = os.path.dirname(target) if store.local else None
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".safetensors.tmp", dir=folder)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        digest = _sha256(tmp)
        size = os.path.getsize(tmp)
        if store.local:
            os.replace(tmp, target)
        else:
            store.fs.put_file(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    meta = {"format": FORMAT, "file": MODEL_FILE, "job": job.name, "workload": workload, "sweep": sweep,
            "model": job.model, "model_args": job.model_args, "step": int(ptr["step"]), "steps": job.steps,
            "checkpoint": ckpt_join(checkpoint_root, ptr["dir"]), "parallelism": ptr.get("parallelism"),
            "world_size": ptr.get("world_size"), "parameters": sum(t.numel() for t in tensors.values()),
            "bytes": size, "sha256": digest, "exported_at": time.time(),
            "export_s": round(time.perf_counter() - t0, 3), **(info or {})}
    _write_meta(store, rel, meta)
    meta["path"] = target
    return meta


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_exported(path: str):
    """The exported model, built from the import path in the file's header and loaded (plain torch)."""
    import importlib

    import safetensors
    from safetensors.torch import load_file

    with safetensors.safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("saturn.format") != FORMAT:
        raise SaturnInputError(f"{path}: not a saturn model export (no {FORMAT} header)")
    mod, _, fn = meta["saturn.model"].partition(":")
    model = getattr(importlib.import_module(mod), fn)(**json.loads(meta["saturn.model_args"]))
    model.load_state_dict(load_file(path))
    return model


__all__ = ["export_from_checkpoint", "read_export", "load_exported", "export_rel", "MODEL_FILE", "META_FILE"]
