"""Example data: batches generated from the step number alone.

Why: a resumed job, under any parallelism or device count, must see exactly the batches it would
have seen; a pure function of (seed, step) gives that with no sampler state to checkpoint.

Fault-injection knobs (test-only, in `data_args`; they act only inside a training run, i.e. when
the runner set SATURN_RUNNER_MODE=train, never in the profiler's trials or the planner's process,
and they never change a batch):
  slow_after_step, slow_step_s   every step from `slow_after_step` on sleeps `slow_step_s` more
  warmup_slow_s, warmup_step_s   steps during the first `warmup_slow_s` seconds of a launch sleep
                                 `warmup_step_s` more (a warm-up slower than the profile's)
  stall_at_step, stall_s         step `stall_at_step` sleeps `stall_s` once
  kill_at_step                   the rank computing that step SIGKILLs itself, once
  term_at_step                   that rank SIGTERMs its launch (torchrun and every rank), once:
                                 a preemption from outside (a node drain)
  fail_at_step, fail_times       that step raises RuntimeError, on the first `fail_times` launches
  fault_dir                      folder of the once-markers (required by kill/term/stall/fail)
"""

from __future__ import annotations

import os
import signal
import time

import torch

_LAUNCH_T0: list[float] = []  # when this process computed its first batch


def _once(fault_dir, name: str) -> bool:
    """True exactly once per (fault_dir, name) across processes: the first to create the marker."""
    if not fault_dir:
        raise ValueError(f"data_args.{name.split('-')[0]} needs data_args.fault_dir (a folder for its once-marker)")
    os.makedirs(fault_dir, exist_ok=True)
    try:
        os.close(os.open(os.path.join(fault_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def _faults(step: int, *, warmup_slow_s: float = 0.0, warmup_step_s: float = 0.0, stall_at_step=None,
            stall_s: float = 0.0, kill_at_step=None, term_at_step=None, fail_at_step=None, fail_times: int = 1,
            fault_dir=None) -> None:
    if os.environ.get("SATURN_RUNNER_MODE") != "train":
        return
    now = time.time()
    if not _LAUNCH_T0:
        _LAUNCH_T0.append(now)
    if warmup_slow_s and warmup_step_s and now - _LAUNCH_T0[0] < warmup_slow_s:
        time.sleep(warmup_step_s)
    if stall_at_step is not None and step == stall_at_step and _once(fault_dir, f"stall-{step}"):
        time.sleep(stall_s)
    if kill_at_step is not None and step == kill_at_step and _once(fault_dir, f"kill-{step}"):
        os.kill(os.getpid(), signal.SIGKILL)
    if term_at_step is not None and step == term_at_step and _once(fault_dir, f"term-{step}"):
        os.killpg(os.getpgid(os.getppid()), signal.SIGTERM)  # torchrun's group; it forwards to every rank
        os.kill(os.getpid(), signal.SIGTERM)
    if fail_at_step is not None and step == fail_at_step:
        for i in range(int(fail_times)):
            if _once(fault_dir, f"fail-{step}-{i}"):
                raise RuntimeError(f"injected failure at step {step} (launch {i + 1} of {fail_times})")


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _drift(step: int, slow_after_step: int | None, slow_step_s: float, faults: dict) -> None:
    _faults(step, **faults)
    if (slow_after_step is not None and step >= slow_after_step and slow_step_s > 0
            and os.environ.get("SATURN_RUNNER_MODE") == "train"):
        time.sleep(slow_step_s)


def tokens(step: int, batch_size: int, *, seq_len: int = 128, vocab: int = 4096, seed: int = 0,
           slow_after_step: int | None = None, slow_step_s: float = 0.0, **faults):
    """Next-token LM batch: (inputs, targets), each (batch_size, seq_len) int64.

    The sequence follows a noisy affine rule (x[t+1] = a*x[t] + b mod vocab, sometimes replaced by
    noise), so a model can learn it and the loss falls.
    """
    _drift(step, slow_after_step, slow_step_s, faults)
    g = _generator(seed, step)
    start = torch.randint(0, vocab, (batch_size, 1), generator=g)
    steps = torch.arange(seq_len + 1).unsqueeze(0)
    seq = (start + 7 * steps) % vocab
    noise = torch.randint(0, vocab, seq.shape, generator=g)
    seq = torch.where(torch.rand(seq.shape, generator=g) < 0.1, noise, seq)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def images(step: int, batch_size: int, *, image_size: int = 32, channels: int = 3, classes: int = 10,
           seed: int = 0, slow_after_step: int | None = None, slow_step_s: float = 0.0, **faults):
    """Image classification batch: (B, C, H, W) float32 and (B,) int64; each class has its own mean image."""
    _drift(step, slow_after_step, slow_step_s, faults)
    g = _generator(seed, step)
    labels = torch.randint(0, classes, (batch_size,), generator=g)
    protos = torch.Generator().manual_seed(seed)  # class prototypes are fixed across steps
    means = torch.randn(classes, channels, image_size, image_size, generator=protos)
    x = means[labels] + 0.5 * torch.randn(batch_size, channels, image_size, image_size, generator=g)
    return x, labels
