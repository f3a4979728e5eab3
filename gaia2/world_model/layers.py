"""Layers of the world model: QK-normalised attention (self and cross), MLP, adaptive layer norm."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaia2.nn import MLP as SharedMLP


class QKNormAttention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys (per head, learned scale) before the
    dot product, SDPA kernel. Self-attention when ``context`` is None, else cross-attention to it.

    x (B, S, C), context (B, K, C), key_mask (B, K) bool (True = attend) or None -> (B, S, C).
    The output projection is zero-initialised by the model (each block starts as the identity).
    """

    def __init__(self, dim: int, heads: int, eps: float, cross: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        head = dim // heads
        self.q_norm = nn.RMSNorm(head, eps=eps)
        self.k_norm = nn.RMSNorm(head, eps=eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        if self.cross:
            if context is None:
                raise ValueError("QKNormAttention: cross-attention needs a context")
            q = rearrange(self.q(x), "b s (h d) -> b h s d", h=self.heads)
            k, v = rearrange(self.kv(context), "b k (two h d) -> two b h k d", two=2, h=self.heads)
        else:
            q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        mask = None if key_mask is None else key_mask[:, None, None, :]   # (B, 1, 1, K), broadcast over heads/queries
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))


class MLP(SharedMLP):
    """The world model's MLP: ``gaia2.nn.MLP`` with tanh-approximated GELU (DiT's), (..., C) -> (..., C)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, ratio, approximate="tanh")


class AdaLNModulation(nn.Module):
    """Conditioning vector (..., C) -> ``chunks`` modulation vectors (..., C) each (e.g. shift, scale, gate),
    through SiLU and one linear layer. Zero-initialised by the model, so the modulated sub-layer starts off
    (gate 0) and the normalisation starts unmodulated (shift 0, scale 0 meaning x1)."""

    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.chunks, dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift
