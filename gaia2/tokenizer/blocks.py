"""Building blocks of the tokenizer: attention, spatial and space-time transformer blocks, down/up-sampling
convolutions. The MLP and the sinusoidal position encodings are shared with the world model (``gaia2.nn``).

Transformer blocks take channels-last tokens; convolutions take channels-first video
(B, C, T, H, W), as ``torch.nn.Conv3d`` does.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaia2.nn import MLP
from gaia2.tokenizer.config import Stride

__all__ = ["Attention", "DownConv", "SpaceTimeBlock", "SpatialBlock", "UpConv", "attend_space", "attend_time"]


class Attention(nn.Module):
    """Multi-head self-attention over the second axis: (B, N, C) -> (B, N, C), SDPA kernel."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


def attend_space(attn: nn.Module, x: Tensor) -> Tensor:
    """``attn`` within each frame: x (B, T, H, W, C) -> same shape (attention over the H*W tokens)."""
    b, t, h, w, _ = x.shape
    out = attn(rearrange(x, "b t h w c -> (b t) (h w) c"))
    return rearrange(out, "(b t) (h w) c -> b t h w c", b=b, t=t, h=h, w=w)


def attend_time(attn: nn.Module, x: Tensor) -> Tensor:
    """``attn`` along time at each pixel position: x (B, T, H, W, C) -> same shape (over the T tokens)."""
    b, t, h, w, _ = x.shape
    out = attn(rearrange(x, "b t h w c -> (b h w) t c"))
    return rearrange(out, "(b h w) t c -> b t h w c", b=b, h=h, w=w)


class SpatialBlock(nn.Module):
    """Pre-norm transformer block attending within each frame: x (B, T, H, W, C) -> same shape."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio, approximate="none")

    def forward(self, x: Tensor) -> Tensor:
        x = x + attend_space(self.attn, self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SpaceTimeBlock(nn.Module):
    """Space-time factorised block: spatial attention (per frame), temporal attention (per pixel
    position), MLP; each pre-norm and residual. x (B, T, H, W, C) -> same shape."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_s, self.attn_s = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_t, self.attn_t = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm_m, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio, approximate="none")

    def forward(self, x: Tensor) -> Tensor:
        x = x + attend_space(self.attn_s, self.norm_s(x))
        x = x + attend_time(self.attn_t, self.norm_t(x))
        return x + self.mlp(self.norm_m(x))


class DownConv(nn.Module):
    """Strided 3-D conv: (B, C_in, T, H, W) -> (B, C_out, T/st, H/sh, W/sw).

    Kernel ``2s - 1`` with padding ``s - 1`` along each axis: windows overlap by ``s - 1`` on each
    side (a stride-1 axis gets kernel 1, so e.g. a 1x2x2 conv never mixes frames), and every
    length divisible by ``s`` maps exactly to ``length / s``.
    """

    def __init__(self, c_in: int, c_out: int, stride: Stride) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(c_in, c_out, kernel_size=tuple(2 * s - 1 for s in stride), stride=stride,
                              padding=tuple(s - 1 for s in stride))

    def forward(self, x: Tensor) -> Tensor:
        for axis, n, s in zip(("time", "height", "width"), x.shape[2:], self.stride):
            if n % s:
                raise ValueError(f"DownConv: {axis} {n} is not divisible by its stride {s}")
        return self.conv(x)


class UpConv(nn.Module):
    """3x3x3 conv to ``C_out * st * sh * sw`` channels, then depth-to-space:
    (B, C_in, T, H, W) -> (B, C_out, T*st, H*sh, W*sw)."""

    def __init__(self, c_in: int, c_out: int, stride: Stride) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(c_in, c_out * math.prod(stride), kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        st, sh, sw = self.stride
        return rearrange(self.conv(x), "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)", st=st, sh=sh, sw=sw)
