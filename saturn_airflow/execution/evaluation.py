"""Held-out evaluation inside the training loop: the same numbers under every parallelism and device count.

Every rank calls `Evaluator.run` at the same steps (it is collective). Each held-out batch is built
whole from its index, the trainer's `eval_forward` runs the model on it in eval mode under no_grad
(each rank on its share of the rows, or a pipeline's last stage on all of them), and each metric,
a mean over rows, is summed as mean x rows and all-reduced with the row count. So the value is
the mean over every held-out row, whatever the split; only float rounding differs between layouts.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

import torch
import torch.distributed as dist

from saturn_airflow.execution.devices import Devices
from saturn_airflow.parallelisms.base import loss_of, resolve, to_device


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of positions whose argmax over the last dimension is the target."""
    return (outputs.argmax(dim=-1) == targets).float().mean()


def metric_functions(job) -> list[tuple[str, Callable]]:
    """(name, fn(outputs, targets) -> mean over rows) for each metric of the job's evaluation."""
    from saturn_airflow.spec.workload import metric_name

    out = []
    for m in job.evaluation.metrics:
        fn = {"loss": loss_of(job), "accuracy": accuracy}.get(m) or resolve(m)
        out.append((metric_name(m), fn))
    return out


def heldout_factory(job) -> tuple[Callable, dict, int]:
    """(fn(index, batch_size, **args), args, batch_size) of the job's held-out batches."""
    ev = job.evaluation
    if ev.data:
        return resolve(ev.data), dict(ev.data_args), ev.batch_size or job.batch_size
    return resolve(job.data), {**job.data_args, **ev.data_args}, ev.batch_size or job.batch_size


def heldout_batch(job, index: int):
    fn, args, bs = heldout_factory(job)
    return fn(index, bs, **args)


def _rows_of(t, lo: int, hi: int):
    if isinstance(t, (tuple, list)):
        return type(t)(_rows_of(x, lo, hi) for x in t)
    return t[lo:hi]


def evaluate_reference(model: torch.nn.Module, job) -> dict[str, float]:
    """The same metrics on a plain model in this process (tests; an exported model's check)."""
    fns = metric_functions(job)
    sums, rows = [0.0] * len(fns), 0
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(job.evaluation.batches):
            x, y = heldout_batch(job, i)
            out = model(x)
            n = _first(y).shape[0]
            for k, (_, fn) in enumerate(fns):
                sums[k] += float(fn(out, y)) * n
            rows += n
    model.train(was)
    return {name: sums[k] / rows for k, (name, _) in enumerate(fns)}


def _first(t):
    return t[0] if isinstance(t, (tuple, list)) else t


class Evaluator:
    """When to evaluate (every N steps, at `extra_steps`, and at the last step) and how (`run`).

    `on_result(step, values, seconds)` runs on rank 0 after each evaluation (the runner records it).
    """

    def __init__(self, job, devices: Devices, *, on_result: Optional[Callable[[int, dict, float], None]] = None,
                 extra_steps: Iterable[int] = ()):
        if job.evaluation is None:
            raise ValueError(f"job {job.name!r} has no evaluation")
        self.job, self.devices, self.on_result = job, devices, on_result
        self.spec = job.evaluation
        self.extra_steps = set(int(s) for s in extra_steps)
        self.fns = metric_functions(job)
        self.last: Optional[dict] = None
        self._batches: dict[int, tuple] = {}  # the held-out set is small and the same every time: built once

    def due(self, step: int, total: int) -> bool:
        every = self.spec.every_steps
        return step == total or (every is not None and step % every == 0) or step in self.extra_steps

    def run(self, trainer, step: int) -> dict[str, float]:
        """Collective: every rank calls it at the same step; every rank gets the values."""
        t0 = time.perf_counter()
        d = self.devices
        sums = torch.zeros(len(self.fns) + 1, dtype=torch.float64)
        for i in range(self.spec.batches):
            if i not in self._batches:
                self._batches[i] = heldout_batch(self.job, i)
            x, y = self._batches[i]
            got = trainer.eval_forward(x)
            if got is None:
                continue
            out, (lo, hi) = got
            if hi <= lo:
                continue
            yt = _rows_of(y, lo, hi)
            yt = to_device(yt, _first(out).device if isinstance(out, (tuple, list)) else out.device)
            for k, (_, fn) in enumerate(self.fns):
                sums[k] += float(fn(out, yt)) * (hi - lo)
            sums[-1] += hi - lo
        if d.world_size > 1:
            s = sums.to(d.device) if d.kind == "cuda" else sums
            dist.all_reduce(s, op=dist.ReduceOp.SUM)
            sums = s.cpu()
        rows = float(sums[-1])
        values = {name: (float(sums[k]) / rows if rows else float("nan")) for k, (name, _) in enumerate(self.fns)}
        self.last = values
        if self.on_result is not None and d.is_main:
            self.on_result(step, values, time.perf_counter() - t0)
        return values


__all__ = ["Evaluator", "accuracy", "metric_functions", "heldout_batch", "heldout_factory", "evaluate_reference"]
