"""Example data: batches generated from the step number alone.

Why: a resumed job, under any parallelism or device count, must see exactly the batches it would
have seen; a pure function of (seed, step) gives that with no sampler state to checkpoint.
`stream` picks an independent sequence of batches from the same distribution: 0 (the default) for
training, another number for held-out batches (`evaluation: {data_args: {stream: 1}}`).

Fault-injection knobs (test-only, in `data_args`; they act only inside a training run, i.e. when
the runner set SATURN_RUNNER_MODE=train, never in the profiler's trials or the planner's process,
and they never change a batch):
  slow_after_step, slow_step_s   every step from `slow_after_step` on sleeps `slow_step_s` more
    (or slow_factor)             (or runs `slow_factor` times as long as it computes);
    slow_after_file              and, if given, only while this file exists (a test starts the
                                 slowdown when it is ready, and may end it); `{node}` in the path is
                                 the node the job runs on (a slowed node, not a slow job); the first
                                 slow step and its time are written to <fault_dir>/slow-began
  warmup_slow_s, warmup_step_s   steps during the first `warmup_slow_s` seconds of a launch sleep
    (or warmup_factor)           `warmup_step_s` more, or take `warmup_factor` times as long (a
                                 warm-up slower than the profile's)
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

_PACE: dict = {}  # this process: first call, previous call and the sleep added to it


def _stretch(factor: float) -> float:
    """Sleep so the step now ending took `factor` times its own compute (measured between calls)."""
    now = time.time()
    last, slept = _PACE.get("last"), _PACE.get("slept", 0.0)
    extra = max(0.0, (factor - 1.0) * (now - last - slept)) if last is not None else 0.0
    return min(extra, 5.0)


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


def _faults(step: int, *, slow_after_step=None, slow_step_s: float = 0.0, slow_factor: float = 1.0,
            slow_after_file=None,
            warmup_slow_s: float = 0.0, warmup_step_s: float = 0.0, warmup_factor: float = 1.0, stall_at_step=None,
            stall_s: float = 0.0, kill_at_step=None, term_at_step=None, fail_at_step=None, fail_times: int = 1,
            fault_dir=None) -> None:
    if os.environ.get("SATURN_RUNNER_MODE") != "train":
        return
    now = time.time()
    _PACE.setdefault("t0", now)
    sleep = 0.0
    if warmup_slow_s and now - _PACE["t0"] < warmup_slow_s:
        sleep += warmup_step_s + (_stretch(warmup_factor) if warmup_factor > 1 else 0.0)
    if slow_after_step is not None and step >= slow_after_step and (
            slow_after_file is None or os.path.exists(slow_after_file.replace("{node}", os.environ.get("SATURN_NODE", "")))):
        sleep += slow_step_s + (_stretch(slow_factor) if slow_factor > 1 else 0.0)
        if fault_dir and not os.path.exists(os.path.join(fault_dir, "slow-began")) and _once(fault_dir, "slow-began"):
            with open(os.path.join(fault_dir, "slow-began"), "w") as f:
                f.write(f'{{"step": {step}, "t": {now}}}')
    _PACE.update(last=now, slept=sleep)
    if sleep > 0:
        time.sleep(sleep)
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


def _generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    # the generator keeps 32 bits of its seed: streams sit 2654435761 (2^32 / golden ratio) apart in them
    return torch.Generator().manual_seed((seed * 1_000_003 + step + stream * 2_654_435_761) % 2**32)


def _drift(step: int, slow_after_step: int | None, slow_step_s: float, faults: dict) -> None:
    _faults(step, slow_after_step=slow_after_step, slow_step_s=slow_step_s, **faults)


def tokens(step: int, batch_size: int, *, seq_len: int = 128, vocab: int = 4096, seed: int = 0, stream: int = 0,
           slow_after_step: int | None = None, slow_step_s: float = 0.0, **faults):
    """Next-token LM batch: (inputs, targets), each (batch_size, seq_len) int64.

    The sequence follows a noisy affine rule (x[t+1] = a*x[t] + b mod vocab, sometimes replaced by
    noise), so a model can learn it and the loss falls.
    """
    _drift(step, slow_after_step, slow_step_s, faults)
    g = _generator(seed, step, stream)
    start = torch.randint(0, vocab, (batch_size, 1), generator=g)
    steps = torch.arange(seq_len + 1).unsqueeze(0)
    seq = (start + 7 * steps) % vocab
    noise = torch.randint(0, vocab, seq.shape, generator=g)
    seq = torch.where(torch.rand(seq.shape, generator=g) < 0.1, noise, seq)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def images(step: int, batch_size: int, *, image_size: int = 32, channels: int = 3, classes: int = 10,
           seed: int = 0, stream: int = 0, slow_after_step: int | None = None, slow_step_s: float = 0.0, **faults):
    """Image classification batch: (B, C, H, W) float32 and (B,) int64; each class has its own mean image."""
    _drift(step, slow_after_step, slow_step_s, faults)
    g = _generator(seed, step, stream)
    labels = torch.randint(0, classes, (batch_size,), generator=g)
    protos = torch.Generator().manual_seed(seed)  # class prototypes are fixed across steps
    means = torch.randn(classes, channels, image_size, image_size, generator=protos)
    x = means[labels] + 0.5 * torch.randn(batch_size, channels, image_size, image_size, generator=g)
    return x, labels
