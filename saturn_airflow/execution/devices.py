"""Devices: CUDA GPUs by id, else one CPU core per device (the process pinned to it, one thread).

Everything device-specific lives here so the parallelisms, profiler and runner are device-agnostic:
the same code runs on NCCL GPUs and on gloo CPU cores in CI.

A worker serving one node of a cluster knows that node's devices from `[saturn] device_ids`; a
plan's device ids 0..gpus-1 of that node map onto them in order (`physical_ids`).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Optional

from saturn_airflow.errors import SaturnInputError

ENV_IDS = "SATURN_DEVICE_IDS"  # the launch's device ids, comma separated, in rank order
ENV_KIND = "SATURN_DEVICE_KIND"  # "cuda" | "cpu"
ENV_CPU_MEM_MB = "SATURN_CPU_DEVICE_MEM_MB"  # optional per-core memory budget: exceeding it is an OOM
ENV_NODE = "SATURN_NODE"  # the node a launch runs on (ranks and data functions may read it)


def _torch():
    import torch

    return torch


def device_kind() -> str:
    """'cuda' when this machine has a usable CUDA GPU, else 'cpu'."""
    forced = os.environ.get(ENV_KIND)
    if forced:
        return forced
    try:
        return "cuda" if _torch().cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def available_devices(kind: Optional[str] = None) -> list[int]:
    """Device ids this process may use: CUDA ordinals, or 0..n-1 for the n CPU cores in its affinity mask."""
    kind = kind or device_kind()
    if kind == "cuda":
        return list(range(_torch().cuda.device_count()))
    return list(range(len(_allowed_cores())))


def _allowed_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def node_device_ids(kind: Optional[str] = None) -> list[int]:
    """The devices of the node this worker serves: [saturn] device_ids (checked against this machine),
    else every device. Two workers on one machine with disjoint device_ids act as two nodes."""
    from saturn_airflow import settings

    kind = kind or device_kind()
    have = available_devices(kind)
    ids = settings.device_ids()
    if ids is None:
        return have
    missing = [i for i in ids if i not in have]
    if missing:
        raise SaturnInputError(f"[saturn] device_ids lists {missing}, which this machine does not have "
                               f"({len(have)} {kind} devices: ids {have[0] if have else '-'}..{have[-1] if have else '-'})")
    return ids


def physical_ids(plan_ids: list[int], node: str = "", kind: Optional[str] = None) -> list[int]:
    """The devices this worker launches on for a plan's device ids 0..gpus-1 of its node: the i-th of
    the node's devices (node_device_ids) for plan id i."""
    devs = node_device_ids(kind)
    bad = [i for i in plan_ids if not 0 <= int(i) < len(devs)]
    if bad:
        raise SaturnInputError(f"plan device ids {bad} of node {node or '?'}: this worker has {len(devs)} devices "
                               f"({devs}); set [saturn] device_ids of the worker, or fix the workload's node size")
    return [devs[int(i)] for i in plan_ids]


def cpu_cores(device_ids: list[int]) -> list[int]:
    """CPU device i is the i-th core this process may use (core numbers need not start at 0)."""
    allowed = _allowed_cores()
    return [allowed[i] if 0 <= i < len(allowed) else i for i in device_ids]


def device_type_name(kind: Optional[str] = None) -> str:
    """The gpu_type a profile config gets: the GPU's name (same spelling as cluster.local_cluster) or 'cpu'."""
    kind = kind or device_kind()
    if kind == "cuda":
        return _torch().cuda.get_device_name(0).lower().replace(" ", "-")
    return "cpu"


def launch_env(device_ids: list[int], kind: Optional[str] = None) -> dict[str, str]:
    """Environment for a launch on exactly `device_ids` (torchrun passes it to every rank)."""
    kind = kind or device_kind()
    env = {ENV_IDS: ",".join(str(i) for i in device_ids), ENV_KIND: kind}
    if kind == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = env[ENV_IDS]
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, len(available_devices("cuda"))))))
        env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    else:
        env["SATURN_CPU_CORES"] = ",".join(str(c) for c in cpu_cores(device_ids))
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = "1"  # 2 threads on a shared core run 1.5-3x slower (measured on this project's dev box)
        env["MKL_NUM_THREADS"] = "1"
    return env


@dataclass
class Devices:
    """What one rank sees: its place in the world and the torch device it computes on."""

    ids: list[int]
    kind: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: object = None  # torch.device
    mem_limit_bytes: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "nccl" if self.kind == "cuda" else "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def bind_rank() -> Devices:
    """Inside a torchrun rank: pin to this rank's device (core or GPU) and return the rank's view."""
    torch = _torch()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    kind = os.environ.get(ENV_KIND) or device_kind()
    raw = os.environ.get(ENV_IDS)
    ids = [int(x) for x in raw.split(",")] if raw else list(range(world))
    limit = None
    if kind == "cuda":
        torch.cuda.set_device(local)  # LOCAL_RANK indexes the visible devices
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        cores = [int(c) for c in os.environ.get("SATURN_CPU_CORES", "").split(",") if c] or ids
        if raw and hasattr(os, "sched_setaffinity") and local < len(cores):
            try:
                os.sched_setaffinity(0, {cores[local]})
            except OSError:
                pass  # a core outside our mask: run unpinned rather than fail
        torch.set_num_threads(1)
        if os.environ.get(ENV_CPU_MEM_MB):
            limit = int(float(os.environ[ENV_CPU_MEM_MB]) * 2**20)
    return Devices(ids=ids, kind=kind, rank=rank, world_size=world, local_rank=local, device=device,
                   mem_limit_bytes=limit)


# ---- memory -------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _hwm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryMeter:
    """Peak memory of a region: CUDA allocator peak on GPUs; peak RSS growth on CPU.

    On CPU the kernel's high-water mark is reset through /proc/self/clear_refs where allowed, so
    each knob candidate in one process gets its own peak, not the process's.
    """

    def __init__(self, devices: Devices):
        self.devices = devices
        self.base = 0

    def reset(self) -> None:
        torch = _torch()
        if self.devices.kind == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.devices.device)
            self.base = 0
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.base = _rss_bytes()

    def peak(self) -> int:
        """Bytes on the device at its peak (GPU) or RSS high-water mark above the reset point (CPU)."""
        torch = _torch()
        if self.devices.kind == "cuda":
            return int(torch.cuda.max_memory_allocated(self.devices.device))
        return max(0, _hwm_bytes() - self.base)

    def check(self) -> None:
        """Raise an OOM if a CPU device's configured budget is exceeded (a GPU raises by itself)."""
        limit = self.devices.mem_limit_bytes
        if limit and self.devices.kind == "cpu":
            used = _hwm_bytes()
            if used > limit:
                raise DeviceOutOfMemory(f"CPU device memory budget exceeded: {used / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB")


class DeviceOutOfMemory(RuntimeError):
    """A budgeted CPU device ran out of memory (the same meaning as torch.OutOfMemoryError)."""


def is_oom(exc: BaseException) -> bool:
    """OOM in any of its disguises: torch's class, CPU allocator text, cuBLAS/NCCL alloc."""
    torch = _torch()
    if isinstance(exc, (torch.OutOfMemoryError, DeviceOutOfMemory)):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cublas_status_alloc_failed",
                                   "memory budget exceeded"))


def synchronize(devices: Devices) -> None:
    if devices.kind == "cuda":
        _torch().cuda.synchronize(devices.device)


def supports_bf16(devices: Devices) -> bool:
    return devices.kind == "cuda" and _torch().cuda.is_bf16_supported()
