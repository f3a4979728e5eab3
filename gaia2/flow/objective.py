"""Flow-matching objective (paper §2.2.2, eqs. 1, 2, 4).

x_tau = tau x + (1 - tau) eps  (tau = 1 is data), target v = x - eps, L2 loss on the generated latents only.
Latents are (B, T, N, L, H, W); tau is per sample (B,) or per latent time step (B, T).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _broadcast_tau(tau: Tensor, x: Tensor) -> Tensor:
    """tau (B,) or (B, T) -> a view broadcastable to x (B, T, ...)."""
    if tau.dim() not in (1, 2) or tuple(tau.shape) != tuple(x.shape[:tau.dim()]):
        raise ValueError(f"flow: tau must be (B,) or (B, T) matching x {tuple(x.shape)} (got {tuple(tau.shape)})")
    return tau.reshape(*tau.shape, *([1] * (x.dim() - tau.dim())))


def interpolate(x: Tensor, eps: Tensor, tau: Tensor) -> Tensor:
    """x, eps (B, T, N, L, H, W); tau (B,) or (B, T) in [0, 1] -> x_tau = tau x + (1 - tau) eps, same shape."""
    if x.shape != eps.shape:
        raise ValueError(f"flow: x {tuple(x.shape)} and eps {tuple(eps.shape)} differ in shape")
    t = _broadcast_tau(tau, x).to(x.dtype)
    return t * x + (1 - t) * eps


def velocity_target(x: Tensor, eps: Tensor) -> Tensor:
    """The velocity d x_tau / d tau = x - eps (eq. 2), same shape as x."""
    if x.shape != eps.shape:
        raise ValueError(f"flow: x {tuple(x.shape)} and eps {tuple(eps.shape)} differ in shape")
    return x - eps


def flow_loss(pred: Tensor, target: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Masked mean squared error (eq. 4), computed in float32.

    pred, target: (B, ...); loss_mask: bool, broadcastable to pred (e.g. (B, T, N, 1, H, W)), True = in the
    loss; None = every element. Returns (loss, per_sample):
      loss ()          sum of squared errors over all masked elements / their count (element-weighted, so a
                       sample with more generated latents weighs more, as in one big masked mean);
      per_sample (B,)  each sample's own masked mean, for logging by tau bucket and task (still attached to
                       the graph; detach before logging). A sample with no element in the loss gets 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"flow_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    err = (pred.float() - target.float()).square()
    dims = tuple(range(1, pred.dim()))
    if loss_mask is None:
        per_sample = err.mean(dim=dims)
        return err.mean(), per_sample
    if loss_mask.dtype != torch.bool:
        raise ValueError(f"flow_loss: loss_mask must be bool (got {loss_mask.dtype})")
    try:
        mask = torch.broadcast_to(loss_mask, pred.shape)   # a view: no copy of the mask
    except RuntimeError as e:
        raise ValueError(f"flow_loss: loss_mask {tuple(loss_mask.shape)} does not broadcast to "
                         f"{tuple(pred.shape)}") from e
    sse = torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum(dim=dims)   # (B,)
    count = mask.sum(dim=dims).to(err.dtype)                                                            # (B,)
    per_sample = sse / count.clamp_min(1.0)
    loss = sse.sum() / count.sum().clamp_min(1.0)
    return loss, per_sample


def tau_buckets(tau: Tensor, edges: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> Tensor:
    """tau (B,) -> bucket index (B,) long in [0, len(edges) - 1).

    ``edges`` is increasing and covers [0, 1] (first 0, last 1); bucket k is [edges[k], edges[k+1]) and the
    last bucket also holds tau = 1.
    """
    e = [float(v) for v in edges]
    if len(e) < 2 or e[0] != 0.0 or e[-1] != 1.0 or any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"tau_buckets: edges must increase strictly from 0 to 1 (got {tuple(edges)})")
    inner = torch.tensor(e[1:-1], dtype=tau.dtype, device=tau.device)
    return torch.bucketize(tau, inner, right=True)


def grouped_sums(values: Tensor, group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """values (B,) float, group (B,) long in [0, num_groups) -> (sums (G,), counts (G,)), float32.

    Sums and counts (not means) so that a distributed job can all-reduce them before dividing; used to log
    the per-sample loss by tau bucket and by task without a CPU-GPU sync.
    """
    if values.shape != group.shape or values.dim() != 1:
        raise ValueError(f"grouped_sums: values {tuple(values.shape)} and group {tuple(group.shape)} "
                         "must both be (B,)")
    sums = torch.zeros(num_groups, dtype=torch.float32, device=values.device)
    counts = torch.zeros(num_groups, dtype=torch.float32, device=values.device)
    sums.index_add_(0, group, values.detach().float())
    counts.index_add_(0, group, torch.ones_like(values, dtype=torch.float32))
    return sums, counts
