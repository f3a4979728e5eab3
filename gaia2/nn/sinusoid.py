"""Fixed sinusoidal encodings, one frequency ladder for both models.

w_k = max_period^(-k / F), k = 0 .. F - 1 (F frequencies, max_period 10000 as in the transformer paper).
The world model's flow time uses DiT's order [cos, sin]; the position grids of both models use MAE's
order [sin, cos]. Computed in float32 on the device of the values; cast to the activations' dtype after.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoidal(values: Tensor, frequencies: int, max_period: float = 10000.0, sin_first: bool = False) -> Tensor:
    """values (...,) -> (..., 2 * frequencies) float32: [cos(v w_k), sin(v w_k)], or [sin, cos] with
    ``sin_first``; w_k = max_period^(-k / frequencies)."""
    k = torch.arange(frequencies, device=values.device, dtype=torch.float32)
    w = torch.exp(-math.log(max_period) * k / frequencies)     # (F,), w_0 = 1
    angles = values.float()[..., None] * w                      # (..., F)
    parts = (angles.sin(), angles.cos()) if sin_first else (angles.cos(), angles.sin())
    return torch.cat(parts, dim=-1)


def sincos_2d(h: int, w: int, dim: int, device: torch.device | str) -> Tensor:
    """(H, W, dim): the first dim/2 channels encode the row index, the last dim/2 the column index
    (each [sin, cos] over dim/4 frequencies). ``dim`` a multiple of 4."""
    rows = sinusoidal(torch.arange(h, device=device), dim // 4, sin_first=True)   # (H, dim/2)
    cols = sinusoidal(torch.arange(w, device=device), dim // 4, sin_first=True)   # (W, dim/2)
    return torch.cat([rows[:, None].expand(h, w, -1), cols[None].expand(h, w, -1)], dim=-1)


def sincos_3d(t: int, h: int, w: int, dim: int, device: torch.device | str) -> Tensor:
    """(T, H, W, dim): ``sincos_2d`` plus a [sin, cos] encoding of the frame index over dim/2 frequencies
    (summed, so the width stays ``dim``)."""
    times = sinusoidal(torch.arange(t, device=device), dim // 2, sin_first=True)   # (T, dim)
    return sincos_2d(h, w, dim, device)[None] + times[:, None, None]
