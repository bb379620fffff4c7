"""The parallelism template (Saturn's UPP, improved): `search` tunes knobs and measures, `execute` trains.

Both run inside every rank of a torchrun launch on exactly the devices they were given (the runner
starts them). A subclass only says how to build a `Trainer` (model + optimizer + one step) for its
knobs; the base class owns the loop, the measurement, checkpointing, preemption and progress, so
every parallelism is timed and checkpointed the same way and can resume any other's checkpoint.
"""

from __future__ import annotations

import functools
import importlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from saturn_airflow.errors import SaturnInputError
from saturn_airflow.execution.devices import Devices, MemoryMeter, synchronize


# ---- the job's factories ------------------------------------------------------------------------

def resolve(path: str, *, job: Optional[str] = None, role: str = "factory") -> Callable:
    """'package.module:attr' -> the callable. A path that does not import (or names no callable) is
    the user's input: SaturnInputError naming the job, the role and the path, never a bare ImportError."""
    where = f"job {job!r}: " if job else ""
    mod, _, attr = path.partition(":")
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - ModuleNotFoundError, or any error raised by the user's module
        raise SaturnInputError(f"{where}cannot import the {role} {path!r}: {type(e).__name__}: {e}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise SaturnInputError(f"{where}cannot import the {role} {path!r}: module {mod!r} has no attribute {attr!r}")
    if not callable(obj):
        raise SaturnInputError(f"{where}the {role} {path!r} is a {type(obj).__name__}, not a function or class")
    return obj


def check_factories(job) -> None:
    """Import the job's model, data and loss factories once, so a wrong path fails as input, up front."""
    resolve(job.model, job=job.name, role="model factory")
    resolve(job.data, job=job.name, role="data factory")
    if job.loss:
        resolve(job.loss, job=job.name, role="loss")


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (the workload contract's default)."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), targets.reshape(-1))


def build_model(job) -> nn.Module:
    """The job's model, seeded so every parallelism and rank starts from the same weights."""
    torch.manual_seed(job.seed)
    return resolve(job.model, job=job.name, role="model factory")(**job.model_args)


def make_optimizer(params, spec) -> torch.optim.Optimizer:
    extra = dict(spec.model_extra or {})
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[spec.name]
    return cls(params, lr=spec.lr, **extra)


def loss_of(job) -> Callable:
    return resolve(job.loss, job=job.name, role="loss") if job.loss else default_loss


def global_batch(job, step: int):
    """The global batch of `step`: the same on every rank, under every parallelism."""
    return resolve(job.data, job=job.name, role="data factory")(step, job.batch_size, **job.data_args)


def rows(t, rank: int, world: int):
    """This rank's contiguous share of a global batch (batch_size divisible by world, checked earlier)."""
    if isinstance(t, (tuple, list)):
        return type(t)(rows(x, rank, world) for x in t)
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def _rows_in(t) -> int:
    return _rows_in(t[0]) if isinstance(t, (tuple, list)) else t.shape[0]


def rows_range(t, lo: int, hi: int):
    """Rows [lo, hi) of a batch (a tensor or a tuple of tensors)."""
    if isinstance(t, (tuple, list)):
        return type(t)(rows_range(x, lo, hi) for x in t)
    return t[lo:hi]


def to_device(t, device):
    if isinstance(t, (tuple, list)):
        return type(t)(to_device(x, device) for x in t)
    return t.to(device, non_blocking=True)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The units parallelisms wrap: the children of a Sequential, else the entries of its ModuleLists."""
    if isinstance(model, nn.Sequential):
        return [m for m in model.children() if any(True for _ in m.parameters())]
    out = []
    for child in model.children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            out += [m for m in child.children() if any(True for _ in m.parameters())]
    return out


def apply_activation_checkpointing(mods: list[nn.Module]) -> None:
    """Recompute each module's activations in backward instead of keeping them.

    Done by replacing the instance's forward, not by wrapping, so parameter names (and therefore
    checkpoints) are the same with and without it.
    """
    for m in mods:
        if getattr(m, "_saturn_ckpt", False):
            continue
        inner = m.forward
        m.forward = functools.partial(_ckpt_call, inner)
        m._saturn_ckpt = True


def _ckpt_call(fn, *args, **kwargs):
    return _checkpoint(fn, *args, use_reentrant=False, **kwargs)


def mean_over_ranks(x: torch.Tensor, devices: Devices) -> float:
    x = x.detach()
    if devices.world_size > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= devices.world_size
    return float(x)


# ---- what a parallelism builds ------------------------------------------------------------------

class Trainer:
    """One rank's model, optimizer and training step under one parallelism and knob setting.

    `model` is the module whose state is checkpointed (a pipeline stage holds only its layers; the
    names are the full model's, so any layout can load it).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def step(self, step: int) -> Optional[float]:  # pragma: no cover - interface
        """Train on global batch `step`; return the global mean loss (at least on rank 0)."""
        raise NotImplementedError

    def eval_forward(self, inputs) -> Optional[tuple[Any, tuple[int, int]]]:
        """Collective forward of a whole held-out batch in eval mode, no gradients: this rank's outputs
        and the rows [lo, hi) of the batch they belong to, or None when this rank holds no outputs.

        Default: every rank runs `self.model` on its contiguous share of the rows (right for any layout
        where each rank's model maps its rows to their outputs: single, DDP, FSDP). A rank whose share
        is empty still runs a forward (on one row, discarded) so sharded models' collectives line up.
        """
        d = self.devices
        n = _rows_in(inputs)
        lo, hi = d.rank * n // d.world_size, (d.rank + 1) * n // d.world_size
        x = rows_range(inputs, lo, hi) if hi > lo else rows_range(inputs, 0, 1)
        x = to_device(x, getattr(self, "input_device", None) or d.device)
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            self.model.train(was)
        return out, (lo, hi if hi > lo else lo)

    def state_dict(self) -> dict:
        """Model and optimizer state keyed by the full model's parameter names, the optimizer's
        hyper-parameters too (`flatten_optimizer_state_dict`): DCP writes one copy of every non-tensor
        entry, so the default index-keyed `param_groups.0.*` of two pipeline stages (each holding other
        parameters) collided, and a stage resumed with the other's group (KeyError 'betas')."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        msd, osd = get_state_dict(self.model, self.optimizer, options=StateDictOptions(flatten_optimizer_state_dict=True))
        return {"model": msd, "optim": osd}

    def load_state_dict(self, sd: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(self.model, self.optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                       options=StateDictOptions(flatten_optimizer_state_dict=True))


class DataParallelTrainer(Trainer):
    """Every rank runs the whole (possibly wrapped or sharded) model on its rows of the global batch."""

    def __init__(self, job, devices: Devices, model: nn.Module, optimizer: torch.optim.Optimizer,
                 input_device=None):
        self.job, self.devices, self.model, self.optimizer = job, devices, model, optimizer
        self.loss_fn = loss_of(job)
        self.input_device = input_device or devices.device

    def step(self, step: int) -> float:
        x, y = global_batch(self.job, step)
        d = self.devices
        x, y = to_device(rows(x, d.rank, d.world_size), self.input_device), to_device(rows(y, d.rank, d.world_size), self.input_device)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_over_ranks(loss, d)


# ---- results ------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """`search`'s answer: the knobs and seconds per step, or why this config cannot run."""

    knobs: Optional[dict] = None
    step_s: Optional[float] = None
    reason: Optional[str] = None
    stats: dict = field(default_factory=dict)  # step_cpu_s, samples, peak_mem_bytes, save_s, load_s, tried

    @property
    def feasible(self) -> bool:
        return self.step_s is not None and self.reason is None


PRECISE_MIN_STEPS = 8


def known_to(samples: list[float], precision: float) -> bool:
    """True when the median of `samples` is known to within `precision` (relative half-width of a 95%
    interval, from the median absolute deviation: robust to a co-tenant's bursts)."""
    n = len(samples)
    if precision <= 0 or n < PRECISE_MIN_STEPS:
        return False
    med = statistics.median(samples)
    mad = statistics.median(abs(x - med) for x in samples)
    half = 1.96 * 1.2533 * 1.4826 * mad / n ** 0.5
    return med > 0 and half <= precision * med


@dataclass
class ExecResult:
    status: str  # "done" | "preempted"
    step: int
    total: int
    losses: list = field(default_factory=list)
    start_step: int = 0
    train_wall_s: float = 0.0  # the step loop only (no build, load or final save)
    train_cpu_s: float = 0.0


class StopSignal:
    """Preemption: set by the SIGTERM handler (or a test's stop step); all ranks agree before stopping.

    Ranks receive the signal at different moments; a stop that is not agreed deadlocks the
    collective checkpoint save, so every step the ranks all-reduce(MAX) [stop, save-due].
    """

    def __init__(self, stop_at_step: Optional[int] = None):
        self.requested = False
        self.stop_at_step = stop_at_step

    def agree(self, step: int, save_due: bool, devices: Devices) -> tuple[bool, bool]:
        stop = self.requested or (self.stop_at_step is not None and step >= self.stop_at_step)
        if devices.world_size == 1:
            return stop, save_due
        flags = torch.tensor([float(stop), float(save_due)], device=devices.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])


# ---- the template -------------------------------------------------------------------------------

class Parallelism:
    """Base class of every parallelism. Subclass, implement `build`, optionally `check`/`knob_candidates`.

    Class attributes the profiler reads:
      min_devices / max_devices: the device counts it can use.
      dominated_by: a parallelism it can never beat on the same device count when that one fits
        (e.g. spilling vs single): the profiler tries it only if the dominating one is infeasible.
      version: bump when a change alters speed, so cached profiles are re-measured.
    """

    name: str = "base"
    min_devices: int = 1
    max_devices: Optional[int] = None
    dominated_by: Optional[str] = None
    version: str = "1"

    # -- to implement --
    def build(self, job, devices: Devices, knobs: dict) -> Trainer:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, job, n_devices: int) -> Optional[str]:
        """Why this parallelism cannot run `job` on n devices, known without running (None: try it)."""
        if n_devices < self.min_devices or (self.max_devices is not None and n_devices > self.max_devices):
            hi = "" if self.max_devices is None else f"..{self.max_devices}"
            return f"{self.name} runs on {self.min_devices}{hi or '+'} devices, not {n_devices}"
        if job.batch_size % n_devices:
            return f"batch_size {job.batch_size} is not divisible by {n_devices} devices"
        return None

    def knob_candidates(self, job, devices: Devices) -> list[dict]:
        """Knob settings to try, expected-fastest first; later ones trade speed for memory."""
        return [{}]

    # -- the two methods of the template --
    def search(self, job, devices: Devices, *, warmup: int = 3, measure: int = 5, measure_s: float = 3.0,
               precision: float = 0.0, first_fit: bool = True,
               start: int = 0, on_candidate: Optional[Callable[[int, dict], None]] = None,
               roundtrip_dir: Optional[str] = None) -> SearchResult:
        """Tune knobs on these devices: measure candidates in order, return the first that fits
        (first_fit) or the fastest. An OOM or crash ends the process (the profiler relaunches from
        the next candidate), because a rank that failed leaves its peers inside a collective.
        """
        reason = self.check(job, devices.world_size)
        if reason:
            return SearchResult(reason=reason)
        cands = self.knob_candidates(job, devices)
        best: Optional[SearchResult] = None
        tried = []
        for i, knobs in enumerate(cands):
            if i < start:
                continue
            if on_candidate:
                on_candidate(i, knobs)
            res = self.measure(job, devices, knobs, warmup=warmup, measure=measure, measure_s=measure_s,
                               precision=precision, roundtrip_dir=roundtrip_dir)
            tried.append({"knobs": knobs, "step_s": res.step_s})
            if best is None or res.step_s < best.step_s:
                best = res
            if first_fit:
                break
        if best is None:
            return SearchResult(reason=f"no knob candidate left to try (start={start}, {len(cands)} candidates)")
        best.stats["tried"] = tried
        best.stats["candidates"] = len(cands)
        return best

    def execute(self, job, devices: Devices, knobs: dict, steps: int, checkpoint=None, progress=None, *,
                stop: Optional[StopSignal] = None, on_step: Optional[Callable[[int, float], None]] = None,
                evaluator=None) -> ExecResult:
        """Train `job` up to step `steps` (resuming from `checkpoint`'s latest), checkpointing on its
        schedule, stopping (with a save) when all ranks agree on a stop. `evaluator`
        (execution.evaluation.Evaluator) runs right after each step it is due at, so a checkpoint at
        step s always comes after the evaluation at s and a resume never repeats or skips one."""
        trainer = self.build(job, devices, knobs)
        start = checkpoint.load(trainer) if checkpoint is not None else 0
        stop = stop or StopSignal()
        if progress is not None:
            progress.start(start, steps)
        losses = []
        step = start
        t0, c0 = time.perf_counter(), time.process_time()

        def result(status: str, at: int) -> ExecResult:
            return ExecResult(status, at, steps, losses, start, time.perf_counter() - t0, time.process_time() - c0)

        while step < steps:
            due = checkpoint is not None and devices.is_main and checkpoint.due(step)
            halt, save = stop.agree(step, due, devices)
            if halt:
                res = result("preempted", step)
                if checkpoint is not None:
                    checkpoint.save(trainer, step)
                if progress is not None:
                    progress.finish("preempted", step)
                return res
            if save and step > start:
                checkpoint.save(trainer, step)
            loss = trainer.step(step)
            step += 1
            losses.append(loss)
            if on_step:
                on_step(step, loss)
            if progress is not None:
                progress.update(step, loss)
            if evaluator is not None and evaluator.due(step, job.steps):
                evaluator.run(trainer, step)
        res = result("done", steps)
        if checkpoint is not None and steps > start:
            checkpoint.save(trainer, steps)  # the trained model, and "done" survives a lost progress record
        if progress is not None:
            progress.finish("done", steps)
        return res

    # -- measurement, shared by every parallelism --
    def measure(self, job, devices: Devices, knobs: dict, *, warmup: int, measure: int, measure_s: float = 3.0,
                max_steps: int = 400, roundtrip_dir: Optional[str] = None, precision: float = 0.0) -> SearchResult:
        """Build, run warm-up steps, time at least `measure` steps and `measure_s` seconds with the
        runner's own per-step overhead (the stop agreement), then time a checkpoint save and load.
        With `precision` > 0 the timing stops before `measure_s` once the median step time is known to
        that fraction (95% interval from the steps' spread, at least PRECISE_MIN_STEPS steps): more steps
        would not change the prediction, whose error is dominated by launch-to-launch variation.
        Per-step time is the max over ranks (the slowest rank sets the pace), reported as the median
        (robust to a co-tenant's bursts), with process CPU time alongside.
        """
        meter = MemoryMeter(devices)
        meter.reset()
        t_build = time.perf_counter()
        trainer = self.build(job, devices, knobs)
        build_s = time.perf_counter() - t_build
        meter.check()  # a model that does not even fit fails here, before any step
        stop = StopSignal()
        wall, cpu, warm = [], [], 0.0
        t_measure = None
        s = 0
        while True:
            synchronize(devices)
            t0, c0 = time.perf_counter(), time.process_time()
            if s == warmup:
                t_measure = t0
            # rank 0 decides when enough was measured (>= `measure` steps and >= measure_s seconds);
            # the same all-reduce the training loop does every step makes every rank stop together
            stop.requested = devices.is_main and s >= warmup + measure and (
                t0 - t_measure >= measure_s or s >= warmup + max_steps or known_to(wall, precision))
            if stop.agree(s, False, devices)[0]:
                break
            trainer.step(s)
            synchronize(devices)
            if s >= warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            else:
                warm += time.perf_counter() - t0
            meter.check()
            s += 1
        measure = len(wall)
        peak = meter.peak()
        t = torch.tensor(wall + cpu + [float(peak), warm], dtype=torch.float64)
        if devices.world_size > 1:
            t = t.to(devices.device) if devices.kind == "cuda" else t
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            t = t.cpu()
        vals = t.tolist()
        wall, cpu, peak, warm = vals[:measure], vals[measure:2 * measure], int(vals[-2]), vals[-1]
        med = statistics.median(wall)
        stats: dict[str, Any] = {
            "step_cpu_s": statistics.median(cpu), "samples": [round(w, 5) for w in wall],
            "peak_mem_bytes": peak, "build_s": build_s,
            # first steps are slower (lazy init, pipeline shape inference, allocator growth): a one-off cost
            "first_steps_extra_s": max(0.0, warm - warmup * med),
        }
        if roundtrip_dir:
            from saturn_airflow.execution.checkpoint import CheckpointManager

            ck = CheckpointManager(roundtrip_dir, devices=devices, keep=1)
            t0 = time.perf_counter()
            ck.save(trainer, warmup + measure)
            stats["save_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ck.load(trainer)
            stats["load_s"] = time.perf_counter() - t0
            stats["checkpoint_bytes"] = ck.size_bytes()
        return SearchResult(knobs=dict(knobs), step_s=med, stats=stats)
