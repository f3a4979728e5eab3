"""Latent normalisation (paper §2.2.4, §4): the world model sees (x - mean) / std so that the latents have
the magnitude of the unit Gaussian noise they are interpolated with. The statistics are measured per
latent channel over the tokenizer's latents (``gaia2.flow.stats``: ``gaia2 encode-latents`` stores them
beside the latent shards); the paper preset's scalar 0 / 0.32 belongs to the paper's tokenizer only. They
travel with the exported world model, so generation denormalises with the numbers training used.

``mean`` and ``std`` are scalars or per-channel sequences (length L); ``channel_axis`` says which axis
of ``x`` holds the L channels (-3 for the world model's (B, T, N, L, H, W) and a sample's (T, N, L, H, W)).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Stat = float | Sequence[float]


def _as_tensor(value: Stat, x: Tensor, channel_axis: int, name: str) -> Tensor | float:
    """A scalar as is; a per-channel sequence as a tensor shaped to broadcast along ``channel_axis`` of x."""
    if isinstance(value, (int, float)):
        return float(value)
    t = torch.as_tensor(list(value), dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    axis = channel_axis % x.ndim
    if t.ndim != 1 or t.numel() != x.shape[axis]:
        raise ValueError(f"latent normalisation: {name} has {t.numel()} values but x has {x.shape[axis]} channels "
                         f"on axis {channel_axis} (shape {tuple(x.shape)})")
    return t.reshape([-1 if i == axis else 1 for i in range(x.ndim)])


def _check_std(std: Stat) -> None:
    values = [std] if isinstance(std, (int, float)) else list(std)
    if not all(v > 0 for v in values):
        raise ValueError(f"latent normalisation: std must be > 0 (got {std})")


def normalize(x: Tensor, mean: Stat, std: Stat, channel_axis: int = -3) -> Tensor:
    """Tokenizer latents -> world-model latents: (x - mean) / std, per channel when given per channel."""
    _check_std(std)
    return (x - _as_tensor(mean, x, channel_axis, "mean")) / _as_tensor(std, x, channel_axis, "std")


def denormalize(x: Tensor, mean: Stat, std: Stat, channel_axis: int = -3) -> Tensor:
    """World-model latents -> tokenizer latents (the inverse of ``normalize``): x * std + mean."""
    _check_std(std)
    return x * _as_tensor(std, x, channel_axis, "std") + _as_tensor(mean, x, channel_axis, "mean")
