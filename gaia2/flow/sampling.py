"""Inference (paper §5): Euler integration of the learned velocity over the linear-quadratic schedule.

Convention: tau = 0 is noise, tau = 1 is data; the ODE d x / d tau = v(x, tau) runs from noise to data.

The linear-quadratic schedule is Movie Gen's (paper ref. [20]; the same formula as Genmo Mochi's sampler):
with S steps, the first L = S // 2 steps are those of a long linear schedule, tau_k = k * threshold / L for
k = 0..L (threshold 0.025 = the first 25 steps of a 1000-step linear schedule when S = 50); the remaining
S - L steps reach tau = 1 along a quadratic in the step index that continues the linear part with the same
slope (C1 at the junction). Many small steps are spent where the sample is nearly pure noise and the scene
layout and motion are decided; the big steps come last, near the data, where only detail is left.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gaia2.flow.tasks import step_tau

VelocityFn = Callable[[Tensor, Tensor], Tensor]   # (x (B, T, N, L, H, W), tau (B, T)) -> v, same shape as x


def linear_quadratic_schedule(steps: int = 50, threshold: float = 0.025, linear_steps: int | None = None) -> Tensor:
    """-> taus (steps + 1,) float64 on the CPU, strictly increasing from 0 (noise) to 1 (data).

    taus[k] = k * threshold / L for k <= L (L = ``linear_steps``, default steps // 2); for L <= k <= steps,
    taus[k] = a k^2 + b k + c with a = (L - threshold S) / (L Q^2), b = threshold / L - 2 a L, c = a L^2,
    Q = S - L, which gives taus[L] = threshold, slope threshold / L at k = L and taus[S] = 1.
    Needs 0 < threshold <= L / S (at equality the schedule is linear throughout).
    """
    if steps < 1:
        raise ValueError(f"linear_quadratic_schedule: steps must be >= 1 (got {steps})")
    if steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    L = steps // 2 if linear_steps is None else linear_steps
    if not 1 <= L < steps:
        raise ValueError(f"linear_quadratic_schedule: linear_steps must be in [1, steps) (got {L}, steps={steps})")
    if not 0 < threshold <= L / steps:
        raise ValueError(f"linear_quadratic_schedule: threshold must be in (0, linear_steps / steps = {L / steps}] "
                         f"so that the quadratic part is at least as fast as the linear one (got {threshold})")
    Q = steps - L
    a = (L - threshold * steps) / (L * Q**2)
    b = threshold / L - 2 * a * L
    c = a * L**2
    k = torch.arange(steps + 1, dtype=torch.float64)
    taus = torch.where(k <= L, k * threshold / L, a * k**2 + b * k + c)
    taus[-1] = 1.0   # exact, whatever the rounding of the polynomial
    return taus


def truncate_schedule(taus: Tensor, tau_start: float) -> Tensor:
    """Scene editing (paper §5, partial noising): the part of ``taus`` after ``tau_start``, starting at it.

    taus (S + 1,) increasing -> (tau_start, the taus > tau_start ...), ending at taus[-1]. Noise the real
    latents to tau_start (``interpolate``) and integrate over the result.
    """
    _check_taus(taus)
    if not float(taus[0]) <= tau_start < float(taus[-1]):
        raise ValueError(f"truncate_schedule: tau_start must be in [{float(taus[0])}, {float(taus[-1])}) "
                         f"(got {tau_start})")
    rest = taus[taus > tau_start]
    return torch.cat([torch.tensor([tau_start], dtype=taus.dtype), rest.cpu()])


def _check_taus(taus: Tensor) -> None:
    if taus.dim() != 1 or taus.numel() < 2:
        raise ValueError(f"flow sampling: taus must be 1-D with at least 2 values (got shape {tuple(taus.shape)})")
    if bool((taus[1:] <= taus[:-1]).any()) or float(taus[0]) < 0 or float(taus[-1]) > 1:
        raise ValueError("flow sampling: taus must increase strictly within [0, 1]")


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, x0_noise: Tensor, taus: Tensor, clean: Tensor | None = None,
                 clean_mask: Tensor | None = None) -> Tensor:
    """Integrate d x / d tau = v(x, tau) with Euler steps from taus[0] to taus[-1].

    velocity_fn(x (B, T, N, L, H, W) float32, tau (B, T) float32) -> v, same shape as x. tau is per latent
    step: taus[k] on generated steps and 1.0 on entirely clean (context) steps, as in training.
    x0_noise: (B, T, N, L, H, W), the state at taus[0] (pure noise when taus[0] = 0).
    clean, clean_mask: the given latents (B, T, N, L, H, W) and where they are given (B, T, N, H, W) bool;
    they are imposed before the first step and after every step (context rollout, inpainting).
    Returns x at taus[-1], float32 (the integration runs in float32 whatever x0_noise's dtype).
    """
    _check_taus(taus)
    if (clean is None) != (clean_mask is None):
        raise ValueError("euler_sample: give both clean and clean_mask, or neither")
    B, T, N, _, H, W = x0_noise.shape
    x = x0_noise.float()
    keep = None
    if clean is not None and clean_mask is not None:
        if clean.shape != x0_noise.shape:
            raise ValueError(f"euler_sample: clean {tuple(clean.shape)} must match x0_noise {tuple(x0_noise.shape)}")
        if tuple(clean_mask.shape) != (B, T, N, H, W) or clean_mask.dtype != torch.bool:
            raise ValueError(f"euler_sample: clean_mask must be bool {(B, T, N, H, W)} "
                             f"(got {clean_mask.dtype} {tuple(clean_mask.shape)})")
        keep = clean_mask[:, :, :, None]                     # (B, T, N, 1, H, W)
        clean = clean.float()
        x = torch.where(keep, clean, x)
    # The schedule stays on the CPU as Python floats: no device sync inside the loop.
    ts = [float(t) for t in taus.double()]
    for t0, t1 in zip(ts[:-1], ts[1:]):
        tau = step_tau(torch.full((B,), t0, dtype=torch.float32, device=x.device), clean_mask, T)
        v = velocity_fn(x, tau)
        if v.shape != x.shape:
            raise ValueError(f"euler_sample: velocity_fn returned {tuple(v.shape)}, expected {tuple(x.shape)}")
        x = x + (t1 - t0) * v.float()
        if keep is not None:
            x = torch.where(keep, clean, x)
    return x
