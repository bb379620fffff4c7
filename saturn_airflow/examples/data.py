"""Example data: batches generated from the step number alone.

Why: a resumed job, under any parallelism or device count, must see exactly the batches it would
have seen; a pure function of (seed, step) gives that with no sampler state to checkpoint.
`stream` picks an independent sequence of batches from the same distribution: 0 (the default) for
training, another number for held-out batches (`evaluation: {data_args: {stream: 1}}`).
`slow_after_step`/`slow_step_s` make a job slower than profiled from a given step on: the drift
knob the end-to-end tests use to trigger a re-plan.
"""

from __future__ import annotations

import time

import torch


def _generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    # the generator keeps 32 bits of its seed: streams sit 2654435761 (2^32 / golden ratio) apart in them
    return torch.Generator().manual_seed((seed * 1_000_003 + step + stream * 2_654_435_761) % 2**32)


def _drift(step: int, slow_after_step: int | None, slow_step_s: float) -> None:
    if slow_after_step is not None and step >= slow_after_step and slow_step_s > 0:
        time.sleep(slow_step_s)


def tokens(step: int, batch_size: int, *, seq_len: int = 128, vocab: int = 4096, seed: int = 0, stream: int = 0,
           slow_after_step: int | None = None, slow_step_s: float = 0.0):
    """Next-token LM batch: (inputs, targets), each (batch_size, seq_len) int64.

    The sequence follows a noisy affine rule (x[t+1] = a*x[t] + b mod vocab, sometimes replaced by
    noise), so a model can learn it and the loss falls.
    """
    _drift(step, slow_after_step, slow_step_s)
    g = _generator(seed, step, stream)
    start = torch.randint(0, vocab, (batch_size, 1), generator=g)
    steps = torch.arange(seq_len + 1).unsqueeze(0)
    seq = (start + 7 * steps) % vocab
    noise = torch.randint(0, vocab, seq.shape, generator=g)
    seq = torch.where(torch.rand(seq.shape, generator=g) < 0.1, noise, seq)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def images(step: int, batch_size: int, *, image_size: int = 32, channels: int = 3, classes: int = 10,
           seed: int = 0, stream: int = 0, slow_after_step: int | None = None, slow_step_s: float = 0.0):
    """Image classification batch: (B, C, H, W) float32 and (B,) int64; each class has its own mean image."""
    _drift(step, slow_after_step, slow_step_s)
    g = _generator(seed, step, stream)
    labels = torch.randint(0, classes, (batch_size,), generator=g)
    protos = torch.Generator().manual_seed(seed)  # class prototypes are fixed across steps
    means = torch.randn(classes, channels, image_size, image_size, generator=protos)
    x = means[labels] + 0.5 * torch.randn(batch_size, channels, image_size, image_size, generator=g)
    return x, labels
