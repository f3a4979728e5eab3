"""Classifier-free guidance (paper §5) as a velocity function for ``euler_sample``.

    v = v_cond + (w - 1) (v_cond - v_uncond),   w = 1 + (scale - 1) x time weight x [tau in interval] x cells

so w = scale where guidance acts and w = 1 (exactly the conditional prediction) elsewhere: outside the agents'
boxes under spatially selective guidance, outside the flow-time interval, on latent steps whose time weight is
0. Scale 1 is the conditional prediction and scale 0 the unconditional one. The conditional and the
unconditional branch run as one forward pass over a doubled batch (2B), never two calls. The unconditional
branch is the request's own conditioning with the chosen variables dropped (default: all), or a negative
conditioning to move away from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gaia2.conditioning.encoder import VARIABLES


@dataclass
class GuidanceBatch:
    """Per-request guidance of a batch (B requests, the window's T steps)."""
    scale: Tensor                       # (B,)
    time_weight: Tensor                 # (B, T)
    interval: Tensor                    # (B, 2) flow-time range
    uncond: dict[str, Tensor]           # the unconditional branch's conditioning (B, ...)
    keep: dict[str, Tensor]             # {variable: (B,) bool} kept in the unconditional branch
    cells: Tensor | None = None         # (B, T, N, H, W) bool: where guidance acts (None = everywhere)


class GuidedVelocity:
    """(x (B, T, N, L, H, W), tau (B, T)) -> velocity, with classifier-free guidance when ``guidance`` is given.

    ``on_call`` is called after every model evaluation (progress reporting)."""

    def __init__(self, model: torch.nn.Module, cond: dict[str, Tensor], timestamps: Tensor,
                 camera: dict[str, Tensor], guidance: GuidanceBatch | None = None,
                 autocast: Callable[[], object] | None = None, on_call: Callable[[], None] | None = None) -> None:
        self.model, self.cond, self.timestamps, self.camera = model, cond, timestamps, camera
        self.guidance = guidance
        self.autocast = autocast
        self.on_call = on_call
        if guidance is not None:
            b = len(timestamps)
            ones = torch.ones(b, dtype=torch.bool, device=timestamps.device)
            # Built once: the doubled batch's inputs other than x and tau.
            self._cond2 = {k: torch.cat([v, guidance.uncond[k]]) for k, v in cond.items()}
            self._keep2 = {name: torch.cat([ones, guidance.keep[name]]) for name in VARIABLES}
            self._ts2 = torch.cat([timestamps, timestamps])
            self._camera2 = {k: torch.cat([v, v]) for k, v in camera.items()}

    def _forward(self, x: Tensor, tau: Tensor, cond, timestamps, camera, keep=None) -> Tensor:
        if self.autocast is None:
            return self.model(x, tau, cond, timestamps, camera, keep=keep).float()
        with self.autocast():
            return self.model(x, tau, cond, timestamps, camera, keep=keep).float()

    def __call__(self, x: Tensor, tau: Tensor) -> Tensor:
        g = self.guidance
        if g is None:
            v = self._forward(x, tau, self.cond, self.timestamps, self.camera)
        else:
            v2 = self._forward(torch.cat([x, x]), torch.cat([tau, tau]), self._cond2, self._ts2, self._camera2,
                               self._keep2)
            v_cond, v_uncond = v2.chunk(2)
            # The step's flow time: generated steps carry it, fully given (context) steps carry 1.
            now = tau.float().min(dim=1).values                                               # (B,)
            active = (now >= g.interval[:, 0]) & (now < g.interval[:, 1])
            w = (g.scale - 1.0)[:, None] * g.time_weight * active[:, None].float()           # (B, T)
            w = w[:, :, None, None, None, None]
            if g.cells is not None:
                w = w * g.cells[:, :, :, None].float()                                         # (B, T, N, 1, H, W)
            v = v_cond + w * (v_cond - v_uncond)
        if self.on_call is not None:
            self.on_call()
        return v
