"""Building blocks of the tokenizer: attention, MLP, spatial and space-time transformer blocks,
down/up-sampling convolutions, sinusoidal position encodings.

Transformer blocks take channels-last tokens; convolutions take channels-first video
(B, C, T, H, W), as ``torch.nn.Conv3d`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaia2.tokenizer.config import Stride


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


class MLP(nn.Module):
    """(..., C) -> (..., C) through a hidden layer of ``ratio * C`` with GELU."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SpatialBlock(nn.Module):
    """Pre-norm transformer block attending within each frame: x (B, T, H, W, C) -> same shape."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, _ = x.shape
        x = rearrange(x, "b t h w c -> (b t) (h w) c")
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return rearrange(x, "(b t) (h w) c -> b t h w c", b=b, t=t, h=h, w=w)


class SpaceTimeBlock(nn.Module):
    """Space-time factorised block: spatial attention (per frame), temporal attention (per pixel
    position), MLP; each pre-norm and residual. x (B, T, H, W, C) -> same shape."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_s = nn.LayerNorm(dim)
        self.attn_s = Attention(dim, heads)
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = Attention(dim, heads)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, _ = x.shape
        x = rearrange(x, "b t h w c -> (b t) (h w) c")
        x = x + self.attn_s(self.norm_s(x))
        x = rearrange(x, "(b t) (h w) c -> (b h w) t c", b=b, t=t, h=h, w=w)
        x = x + self.attn_t(self.norm_t(x))
        x = x + self.mlp(self.norm_m(x))
        return rearrange(x, "(b h w) t c -> b t h w c", b=b, h=h, w=w)


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


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """positions (N,) -> (N, dim) = [sin(p w_k), cos(p w_k)], w_k = 10000^(-k / (dim/2)), k < dim/2."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """(H, W, dim): the first dim/2 channels encode the row, the last dim/2 the column."""
    rows = sincos_1d(torch.arange(h, device=device), dim // 2)     # (H, dim/2)
    cols = sincos_1d(torch.arange(w, device=device), dim // 2)     # (W, dim/2)
    return torch.cat([rows[:, None].expand(h, w, -1), cols[None].expand(h, w, -1)], dim=-1)


def sincos_3d(t: int, h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """(T, H, W, dim): 2-D spatial encoding plus a 1-D encoding of the frame index (summed, so the
    width stays ``dim``)."""
    times = sincos_1d(torch.arange(t, device=device), dim)         # (T, dim)
    return sincos_2d(h, w, dim, device)[None] + times[:, None, None]
