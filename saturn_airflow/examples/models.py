"""Example models: a GPT-style decoder LM and a small ViT, both `nn.Sequential` of blocks.

Why Sequential: the pipeline parallelism cuts a model into contiguous runs of its children and keeps
their names ("3.attn.q.weight"), so a checkpoint written under any parallelism loads under any other.
Why separate q/k/v: a fused qkv projection is silently wrong under column-wise tensor sharding.
No dropout, so a step is a deterministic function of (weights, batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name -> (d_model, n_layers, n_heads); the GPU demo sizes are far too slow for a CPU core.
GPT_SIZES = {
    "tiny": (64, 2, 2),
    "small": (128, 4, 4),
    "medium": (256, 6, 4),
    "large": (768, 12, 12),
    "xl": (1600, 48, 25),
}
VIT_SIZES = {"tiny": (32, 2, 2), "small": (96, 4, 3), "medium": (192, 8, 3), "large": (768, 12, 12)}


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be a multiple of n_heads"
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # local head count from the local width: correct under tensor-parallel sharding too
        q, k, v = (m(x).view(b, t, -1, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = True, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, mlp_ratio * d_model)
        self.fc2 = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TokenEmbedding(nn.Module):
    def __init__(self, vocab: int, d_model: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.tok(idx) + self.pos(pos)


class LMHead(nn.Module):
    def __init__(self, d_model: int, vocab: int):
        super().__init__()
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
    return model


def gpt(size: str | None = None, *, vocab: int = 4096, seq_len: int = 128, d_model: int | None = None,
        n_layers: int | None = None, n_heads: int | None = None) -> nn.Sequential:
    """GPT-style decoder LM: [embedding, block x n_layers, ln+head]; input (B, T) ids, output (B, T, vocab).

    `size` picks a preset (tiny/small/medium/large/xl); explicit d_model/n_layers/n_heads override it.
    """
    d, n, h = GPT_SIZES[size or "small"]
    d, n, h = d_model or d, n_layers or n, n_heads or h
    layers = [TokenEmbedding(vocab, d, seq_len)] + [Block(d, h, causal=True) for _ in range(n)] + [LMHead(d, vocab)]
    return _init(nn.Sequential(*layers))


class PatchEmbedding(nn.Module):
    def __init__(self, image_size: int, patch: int, channels: int, d_model: int):
        super().__init__()
        assert image_size % patch == 0, "image_size must be a multiple of patch"
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, d_model)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        p = self.patch
        x = x.unfold(2, p, p).unfold(3, p, p)  # B, C, H/p, W/p, p, p
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)
        return self.proj(x) + self.pos


class ClassifierHead(nn.Module):
    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(x).mean(dim=1))


def vit(size: str | None = None, *, image_size: int = 32, patch: int = 4, channels: int = 3, classes: int = 10,
        d_model: int | None = None, n_layers: int | None = None, n_heads: int | None = None) -> nn.Sequential:
    """Vision transformer classifier: [patch embedding, block x n_layers, mean-pool head]; (B,C,H,W) -> (B, classes)."""
    d, n, h = VIT_SIZES[size or "small"]
    d, n, h = d_model or d, n_layers or n, n_heads or h
    layers = [PatchEmbedding(image_size, patch, channels, d)] + [Block(d, h, causal=False) for _ in range(n)]
    return _init(nn.Sequential(*layers, ClassifierHead(d, classes)))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["gpt", "vit", "param_count", "GPT_SIZES", "VIT_SIZES", "Block"]
