"""Training tasks (paper §4: 70% from scratch, 20% context, 10% spatial inpainting; the probabilities come
from the training config's ``flow``) and the model inputs they imply (paper §2.2.2: context latents
unchanged, the rest interpolated with noise).

A task is expressed as a ``clean_mask`` (B, T, N, H, W) bool over the latent grid: True = the latent is given
clean (not noised, not in the loss), False = it is generated.
  scratch  all False.
  context  the first t latent time steps True (every camera, every position), t uniform in {1, ..., T-1}.
  inpaint  per camera, an axis-aligned rectangle of the H x W grid (height uniform in {1..H}, width uniform
           in {1..W}) is generated; everything outside it is clean. With probability ``p_moving`` (per sample
           and camera) the rectangle drifts: its position moves linearly, rounded to the grid, from a start
           to an end position (each uniform among those that fit) across the T latent steps, as the mask of
           a moving agent does at inference; otherwise it is the same at every step (a spatial hole through
           the whole clip). Generating the box inside clean surroundings is the inference use (paper §5:
           "the masked regions are regenerated"); a full-grid box reduces to scratch for that camera.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from gaia2.flow.objective import interpolate

SCRATCH, CONTEXT, INPAINT = 0, 1, 2
TASK_NAMES = ("scratch", "context", "inpaint")


class TaskBatch(NamedTuple):
    task: Tensor          # (B,) long: SCRATCH, CONTEXT or INPAINT
    clean_mask: Tensor    # (B, T, N, H, W) bool, True = given clean
    context_len: Tensor   # (B,) long: t for CONTEXT samples, 0 otherwise


class FlowInputs(NamedTuple):
    x_in: Tensor          # (B, T, N, L, H, W) clean latents where clean, tau x + (1 - tau) eps elsewhere
    tau: Tensor           # (B, T) flow time per latent step: 1.0 on entirely clean steps, else the sample's tau
    loss_mask: Tensor     # (B, T, N, 1, H, W) bool, True = in the loss (generated and on a kept camera)


class TaskSampler:
    """Draws a task and its clean mask per sample; deterministic given a ``torch.Generator``.

    Every call consumes the same amount of randomness whatever tasks come out, so a resumed generator
    continues exactly.
    """

    def __init__(self, p_scratch: float, p_context: float, p_inpaint: float, p_moving: float = 0.5) -> None:
        probs = (p_scratch, p_context, p_inpaint)
        if any(not p >= 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ValueError(f"TaskSampler: p_scratch, p_context, p_inpaint must be >= 0 and sum to 1 (got {probs})")
        if not 0.0 <= p_moving <= 1.0:
            raise ValueError(f"TaskSampler: p_moving must be in [0, 1] (got {p_moving})")
        self.probs = tuple(float(p) for p in probs)
        self.p_moving = float(p_moving)

    def sample(self, batch_size: int, T: int, N: int, H: int, W: int,
               generator: torch.Generator | None = None) -> TaskBatch:
        """-> TaskBatch with task (B,), clean_mask (B, T, N, H, W), context_len (B,); on the generator's device."""
        if batch_size < 0 or min(T, N, H, W) < 1:
            raise ValueError(f"TaskSampler.sample: need batch_size >= 0 and T, N, H, W >= 1 "
                             f"(got {batch_size}, {T}, {N}, {H}, {W})")
        if T < 2 and self.probs[CONTEXT] > 0:
            raise ValueError(f"TaskSampler.sample: the context task needs T >= 2 latent steps (got T={T}); "
                             "set p_context=0 for single-step clips")
        B = batch_size
        device = generator.device if generator is not None else torch.device("cpu")
        u_task = torch.rand(B, generator=generator, device=device, dtype=torch.float64)
        u_ctx = torch.rand(B, generator=generator, device=device, dtype=torch.float64)
        u_box = torch.rand(B, N, 7, generator=generator, device=device, dtype=torch.float64)

        cdf = torch.tensor(self.probs, dtype=torch.float64, device=device).cumsum(0)
        task = torch.searchsorted(cdf, u_task, right=True).clamp_max(INPAINT)

        # context: t uniform in {1, ..., T-1} (u in [0, 1) so floor(u (T - 1)) is in {0, ..., T-2})
        t_ctx = 1 + (u_ctx * max(T - 1, 1)).floor().long()
        context_len = torch.where(task == CONTEXT, t_ctx, torch.zeros_like(t_ctx))
        steps = torch.arange(T, device=device)
        context_mask = steps[None, :] < context_len[:, None]                                    # (B, T)

        # inpaint: a generated rectangle per camera, fixed or drifting from a start to an end position
        h = 1 + (u_box[..., 0] * H).floor().long()                                              # (B, N) in 1..H
        w = 1 + (u_box[..., 1] * W).floor().long()
        top0 = (u_box[..., 2] * (H - h + 1)).floor().long()                                     # (B, N) 0..H-h
        left0 = (u_box[..., 3] * (W - w + 1)).floor().long()
        moving = u_box[..., 6] < self.p_moving                                                  # (B, N)
        top1 = torch.where(moving, (u_box[..., 4] * (H - h + 1)).floor().long(), top0)
        left1 = torch.where(moving, (u_box[..., 5] * (W - w + 1)).floor().long(), left0)
        frac = (steps.double() / max(T - 1, 1))[None, :, None]                                  # (1, T, 1)
        top = (top0[:, None] + frac * (top1 - top0)[:, None]).round().long()                    # (B, T, N)
        left = (left0[:, None] + frac * (left1 - left0)[:, None]).round().long()
        rows = torch.arange(H, device=device)
        cols = torch.arange(W, device=device)
        in_rows = (rows >= top[..., None]) & (rows < (top + h[:, None])[..., None])            # (B, T, N, H)
        in_cols = (cols >= left[..., None]) & (cols < (left + w[:, None])[..., None])          # (B, T, N, W)
        box = in_rows[..., :, None] & in_cols[..., None, :]                                     # (B, T, N, H, W)
        inpaint_clean = ~box & (task == INPAINT)[:, None, None, None, None]

        clean_mask = context_mask[:, :, None, None, None] | inpaint_clean                       # (B, T, N, H, W)
        return TaskBatch(task=task, clean_mask=clean_mask, context_len=context_len)


def step_tau(tau: Tensor, clean_mask: Tensor | None, T: int) -> Tensor:
    """tau (B,) -> flow time per latent step (B, T): 1.0 where a step is entirely clean (context), else tau.

    clean_mask: (B, T, N, H, W) bool or None (nothing clean). Training and inference share this rule so the
    model sees context steps at tau = 1 in both.
    """
    if tau.dim() != 1:
        raise ValueError(f"step_tau: tau must be (B,) (got {tuple(tau.shape)})")
    per_step = tau[:, None].expand(tau.shape[0], T)
    if clean_mask is None:
        return per_step.clone()
    if clean_mask.dim() != 5 or tuple(clean_mask.shape[:2]) != (tau.shape[0], T):
        raise ValueError(f"step_tau: clean_mask must be (B, T, N, H, W) with B={tau.shape[0]}, T={T} "
                         f"(got {tuple(clean_mask.shape)})")
    all_clean = clean_mask.flatten(2).all(dim=-1)                                               # (B, T)
    return torch.where(all_clean, torch.ones_like(per_step), per_step)


def build_inputs(x: Tensor, eps: Tensor, tau: Tensor, clean_mask: Tensor,
                 camera_mask: Tensor | None = None) -> FlowInputs:
    """The world model's training inputs for one batch.

    x, eps: (B, T, N, L, H, W) normalised latents and unit Gaussian noise; tau: (B,) in (0, 1);
    clean_mask: (B, T, N, H, W) bool (TaskSampler); camera_mask: (B, N) bool, True = camera kept, or None.
    Dropped cameras are left out of the loss; their input latents are untouched here (the model masks them).
    """
    B, T, N, _, H, W = x.shape
    if tuple(clean_mask.shape) != (B, T, N, H, W) or clean_mask.dtype != torch.bool:
        raise ValueError(f"build_inputs: clean_mask must be bool {(B, T, N, H, W)} "
                         f"(got {clean_mask.dtype} {tuple(clean_mask.shape)})")
    if tau.shape != (B,):
        raise ValueError(f"build_inputs: tau must be ({B},) (got {tuple(tau.shape)})")
    clean = clean_mask[:, :, :, None]                                                           # (B, T, N, 1, H, W)
    x_in = torch.where(clean, x, interpolate(x, eps, tau))
    loss_mask = ~clean
    if camera_mask is not None:
        if tuple(camera_mask.shape) != (B, N) or camera_mask.dtype != torch.bool:
            raise ValueError(f"build_inputs: camera_mask must be bool {(B, N)} "
                             f"(got {camera_mask.dtype} {tuple(camera_mask.shape)})")
        loss_mask = loss_mask & camera_mask[:, None, :, None, None, None]
    return FlowInputs(x_in=x_in, tau=step_tau(tau, clean_mask, T).to(x.dtype), loss_mask=loss_mask)
