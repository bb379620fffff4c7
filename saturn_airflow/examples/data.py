"""Example data: batches generated from the step number alone.

Why: a resumed job, under any parallelism or device count, must see exactly the batches it would
have seen; a pure function of (seed, step) gives that with no sampler state to checkpoint.
`slow_after_step`/`slow_step_s` make a job slower than profiled from a given step on: the drift
knob the end-to-end tests use to trigger a re-plan. `slow_while` (a file path; `{node}` becomes the
node the job runs on) makes it slow only while that file exists: a node slowed from outside, as by a
noisy neighbour, that a test switches on and off.
"""

from __future__ import annotations

import os
import time

import torch


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _drift(step: int, slow_after_step: int | None, slow_step_s: float, slow_while: str | None = None) -> None:
    if slow_step_s <= 0:
        return
    if slow_while is not None:
        if os.path.exists(slow_while.replace("{node}", os.environ.get("SATURN_NODE", ""))):
            time.sleep(slow_step_s)
    elif slow_after_step is not None and step >= slow_after_step:
        time.sleep(slow_step_s)


def tokens(step: int, batch_size: int, *, seq_len: int = 128, vocab: int = 4096, seed: int = 0,
           slow_after_step: int | None = None, slow_step_s: float = 0.0, slow_while: str | None = None):
    """Next-token LM batch: (inputs, targets), each (batch_size, seq_len) int64.

    The sequence follows a noisy affine rule (x[t+1] = a*x[t] + b mod vocab, sometimes replaced by
    noise), so a model can learn it and the loss falls.
    """
    _drift(step, slow_after_step, slow_step_s, slow_while)
    g = _generator(seed, step)
    start = torch.randint(0, vocab, (batch_size, 1), generator=g)
    steps = torch.arange(seq_len + 1).unsqueeze(0)
    seq = (start + 7 * steps) % vocab
    noise = torch.randint(0, vocab, seq.shape, generator=g)
    seq = torch.where(torch.rand(seq.shape, generator=g) < 0.1, noise, seq)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def images(step: int, batch_size: int, *, image_size: int = 32, channels: int = 3, classes: int = 10,
           seed: int = 0, slow_after_step: int | None = None, slow_step_s: float = 0.0,
           slow_while: str | None = None):
    """Image classification batch: (B, C, H, W) float32 and (B,) int64; each class has its own mean image."""
    _drift(step, slow_after_step, slow_step_s, slow_while)
    g = _generator(seed, step)
    labels = torch.randint(0, classes, (batch_size,), generator=g)
    protos = torch.Generator().manual_seed(seed)  # class prototypes are fixed across steps
    means = torch.randn(classes, channels, image_size, image_size, generator=protos)
    x = means[labels] + 0.5 * torch.randn(batch_size, channels, image_size, image_size, generator=g)
    return x, labels
