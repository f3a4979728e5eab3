"""Ego action (speed, curvature) -> one embedding per latent step (paper section 2.2.3, eq. 5).

Speed and curvature span orders of magnitude (curvature 1e-4 .. 1e-1 1/m), so each is squashed by a
symmetric log scaled to [-1, 1] before the MLP. The action drives adaptive layer norm in the world
model; a dropped action is a learned null embedding, not zeros, so "no action" is a value the model
can learn to read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia2.conditioning.embeddings import EMBED_STD, init_weights

SPEED_SCALE = 3.6        # m/s -> km/h before the log
SPEED_MAX = 75.0         # m/s, maps to +-1
CURVATURE_SCALE = 1000.0  # amplifies the common small curvatures (1e-4 .. 1e-2 1/m)
CURVATURE_MAX = 0.1      # 1/m, maps to +-1


def symlog(y: Tensor, s: float, y_max: float) -> Tensor:
    """sign(y) log(1 + s|y|) / log(1 + s|y_max|), clamped to [-1, 1] (paper eq. 5); same shape as y."""
    if s <= 0 or y_max <= 0:
        raise ValueError(f"symlog: scale s and y_max must be > 0, got s={s}, y_max={y_max}")
    out = torch.sign(y) * torch.log1p(s * y.abs()) / math.log1p(s * y_max)
    return out.clamp(-1.0, 1.0)


def normalise_action(action: Tensor) -> Tensor:
    """(..., 2) raw [speed m/s, curvature 1/m] -> (..., 2) symlog-normalised, in [-1, 1]."""
    if action.shape[-1] != 2:
        raise ValueError(f"action: last axis must be (speed, curvature), got shape {tuple(action.shape)}")
    speed = symlog(action[..., 0], SPEED_SCALE, SPEED_MAX)
    curvature = symlog(action[..., 1], CURVATURE_SCALE, CURVATURE_MAX)
    return torch.stack([speed, curvature], dim=-1)


COMPONENTS = ("speed", "curvature")


class ActionEncoder(nn.Module):
    """action (B, T, 2) raw speed / curvature, keep (B, 2) bool or None -> (B, T, C).

    Each component is symlog-normalised and embedded on its own (a Linear(1, C) each); the two embeddings
    are summed, then SiLU -> Linear(C, C) (with both known this is the MLP Linear(2, C) -> SiLU ->
    Linear(C, C)). A component that is dropped (``keep[:, i]`` False: conditioning dropout, per sample)
    or unknown (NaN: at inference, per step) takes its own learned ``null`` embedding instead, so speed
    can be given without curvature and the other way round (paper Fig. 9 drops speed and keeps curvature),
    and "unknown" at inference is exactly "dropped" in training.
    Init: linears Xavier-uniform with zero bias; ``null`` rows N(0, 0.02^2).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"ActionEncoder: dim must be >= 1, got {dim}")
        self.speed_in = nn.Linear(1, dim)
        self.curvature_in = nn.Linear(1, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.null = nn.Parameter(torch.empty(len(COMPONENTS), dim))   # row 0 speed, row 1 curvature
        init_weights(self)
        nn.init.normal_(self.null, std=EMBED_STD)

    def forward(self, action: Tensor, keep: Tensor | None = None) -> Tensor:
        if action.ndim != 3 or action.shape[-1] != 2:
            raise ValueError(f"ActionEncoder: action must be (B, T, 2), got {tuple(action.shape)}")
        missing = torch.isnan(action)                                             # (B, T, 2)
        if keep is not None:
            if keep.shape != (action.shape[0], 2) or keep.dtype != torch.bool:
                raise ValueError(f"ActionEncoder: keep must be ({action.shape[0]}, 2) bool (speed, curvature), "
                                 f"got {tuple(keep.shape)} {keep.dtype}")
            missing = missing | ~keep[:, None, :]
        x = normalise_action(action.float().nan_to_num(0.0))                     # a NaN must reach no product
        parts = [self.speed_in(x[..., :1]), self.curvature_in(x[..., 1:])]      # 2 x (B, T, C)
        emb = sum(torch.where(missing[..., i, None], self.null[i].to(p.dtype), p) for i, p in enumerate(parts))
        return self.fc2(F.silu(emb))
