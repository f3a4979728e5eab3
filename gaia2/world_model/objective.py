"""The world model's flow-matching objective on one batch, shared by the training step, the trainer's validation and
the evaluation's validation loss (``gaia2.evaluation.flow_loss``), so that all three compute the same number.

Normalise the latents; draw eps, tau (bimodal logit-normal), the task (scratch / context / inpainting) and, in
training, camera and conditioning dropout, in that order from one generator; build x_tau with the clean latents
kept; predict the velocity; masked L2 against v = x - eps.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor, nn

from gaia2.conditioning.encoder import ConditioningEncoder
from gaia2.flow import TaskSampler, TauSampler, build_inputs, flow_loss, normalize

COND_KEYS = ("action", "agents", "agents_valid", "metadata", "clip", "scenario", "scenario_valid")
CAMERA_KEYS = ("intrinsics", "extrinsics", "distortion")


class Objective(NamedTuple):
    loss: Tensor          # () element-weighted masked MSE of the batch
    per_sample: Tensor    # (B,) each sample's own masked MSE
    tau: Tensor           # (B,) flow time drawn per sample (CPU)
    task: Tensor          # (B,) long: SCRATCH, CONTEXT or INPAINT (CPU)
    target: Tensor        # (B, T, N, L, H, W) velocity target x - eps
    mask: Tensor          # (B, T, N, 1, H, W) bool, True = in the loss


def present_relative(timestamps: Tensor, context_len: Tensor) -> Tensor:
    """Timestamps (B, T) or per camera (B, T, N) in seconds -> relative to the present: the last context
    step (step 0 when a sample has no context), its time averaged over the cameras, so that the cameras'
    offsets from one another are kept."""
    idx = (context_len - 1).clamp(min=0).to(timestamps.device)
    present = timestamps[torch.arange(len(idx), device=timestamps.device), idx]       # (B,) or (B, N)
    if present.ndim == 2:
        present = present.mean(dim=1)
    return timestamps - present.reshape(-1, *([1] * (timestamps.ndim - 1)))


def flow_samplers(flow) -> tuple[TauSampler, TaskSampler]:
    """The training distributions of tau and of the tasks from a ``FlowConfig``."""
    return (TauSampler(flow.tau_weights, flow.tau_means, flow.tau_stds),
            TaskSampler(flow.p_scratch, flow.p_context, flow.p_inpaint, flow.moving_inpaint))


def autocast(precision: str, device: torch.device):
    """bf16 autocast on CUDA when ``precision`` is "bf16"; float32 otherwise."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flow_objective(model: nn.Module, batch: dict[str, Tensor], rng: torch.Generator, flow,
                   tau_sampler: TauSampler, task_sampler: TaskSampler, device: torch.device,
                   dropout: ConditioningEncoder | None = None, precision: str = "fp32") -> Objective:
    """One batch (the trainer's format: latents (B, T, N, L, H, W) on the CPU, timestamps, the conditioning keys
    and camera geometry) through ``model`` -> ``Objective``. ``flow``: the ``FlowConfig`` (latent statistics);
    ``rng``: a CPU generator, the only source of randomness; ``dropout``: the conditioning encoder whose camera
    and conditioning dropout to draw (training), None for none (validation)."""
    x = normalize(batch["latents"].float(), flow.latent_mean, flow.latent_std)   # (B, T, N, L, H, W), CPU
    b, t, n, _, h, w = x.shape
    eps = torch.randn(x.shape, generator=rng)
    tau = tau_sampler.sample(b, rng)
    tasks = task_sampler.sample(b, t, n, h, w, rng)
    camera_keep = dropout.sample_camera_keep(b, n, generator=rng) if dropout is not None else None
    keep = dropout.sample_keep(b, generator=rng) if dropout is not None else None
    inputs = build_inputs(x, eps, tau, tasks.clean_mask, camera_keep)
    dev = device
    cond = {k: batch[k].to(dev, non_blocking=True) for k in COND_KEYS if k in batch}
    camera = {k: batch[k].to(dev, non_blocking=True) for k in CAMERA_KEYS}
    seconds = present_relative(batch["timestamps"].float(), tasks.context_len).to(dev)
    with autocast(precision, dev):
        v = model(inputs.x_in.to(dev), inputs.tau.to(dev), cond, seconds, camera,
                  keep={k: m.to(dev) for k, m in keep.items()} if keep is not None else None,
                  camera_mask=camera_keep.to(dev) if camera_keep is not None else None, generator=rng)
    target = (x - eps).to(dev)
    mask = inputs.loss_mask.to(dev)
    loss, per_sample = flow_loss(v.float(), target, mask)
    return Objective(loss, per_sample, tau, tasks.task, target, mask)
