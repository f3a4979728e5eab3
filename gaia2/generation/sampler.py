"""Batched sampling of prepared requests over the world model's window, for any output length (paper §5).

Every mode is one loop over windows of the trained length W:
  - the first window covers steps [0, W) (or all T < W steps);
  - each later window starts k steps before the end of what is produced (shifted back so it stays full at
    the end) and takes every produced step in it as clean context: predict, append, drop the oldest (the
    paper's autoregressive rollout, k = 3);
  - within a window, ``euler_sample`` integrates from noise (scratch, rollout, inpaint) or from the source
    noised to ``tau_start`` (edit) over the linear-quadratic schedule, with the given latents (rollout context,
    everything outside an inpainting / editing mask) imposed after every step, so they come out bit-identical.
Timestamps are re-referenced to each window's present (its last context step, as in training).

Noise is drawn per request from its own seed over the whole output before anything runs, so a request's
result does not depend on the other requests of its batch, nor on the batch size.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from gaia2.conditioning.encoder import VARIABLES
from gaia2.flow.normalize import denormalize, normalize
from gaia2.flow.objective import interpolate
from gaia2.flow.sampling import euler_sample, linear_quadratic_schedule, truncate_schedule
from gaia2.generation.guidance import GuidanceBatch, GuidedVelocity
from gaia2.generation.inputs import Request
from gaia2.world_model.trainer import present_relative

ROLLOUT_CONTEXT = 3   # k for continuing past the window when the spec does not say (paper §5)
Progress = Callable[[dict], None]
PER_STEP = ("action", "agents", "agents_valid")   # conditioning with a latent-step axis


def windows(steps: int, window: int, context: int) -> list[tuple[int, int, int]]:
    """(start, end, produced context steps at the start) of each window over ``steps`` latent steps."""
    if steps <= window:
        return [(0, steps, 0)]
    if not 1 <= context < window:
        raise ValueError(f"windows: context must be in [1, {window}) (got {context})")
    out = [(0, window, 0)]
    produced = window
    while produced < steps:
        start = min(produced - context, steps - window)
        out.append((start, start + window, produced - start))
        produced = start + window
    return out


def schedule(kind: str, steps: int) -> Tensor:
    if kind == "linear":
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return linear_quadratic_schedule(steps)


def batch_key(r: Request) -> tuple:
    """Requests with equal keys can share a batch (same shapes, windows and schedule)."""
    s = r.spec.sampler
    return (r.steps, len(r.rig.names), r.context or ROLLOUT_CONTEXT, r.tau_start, s.steps, s.schedule, r.guided)


def noise_for(r: Request, latent_dim: int, grid_hw: tuple[int, int]) -> Tensor:
    """The request's noise (T, N, L, H, W), from its seed alone."""
    g = torch.Generator().manual_seed(int(r.spec.sampler.seed))
    return torch.randn(r.steps, len(r.rig.names), latent_dim, *grid_hw, generator=g)


def _window(cond: dict[str, Tensor], start: int, end: int) -> dict[str, Tensor]:
    """The conditioning of latent steps [start, end): per-step variables sliced, per-sample ones as they are."""
    return {n: v[:, start:end] if n in PER_STEP else v for n, v in cond.items()}


def _stack(arrays, dtype=None) -> Tensor:
    return torch.from_numpy(np.stack(arrays)).to(dtype) if dtype else torch.from_numpy(np.stack(arrays))


class Sampler:
    """Runs batches of ``Request``s through the world model; returns raw (tokenizer) latents per request."""

    def __init__(self, model: torch.nn.Module, latent_mean, latent_std, window: int,
                 device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        self.model = model.eval()
        self.mean, self.std = latent_mean, latent_std
        self.window = window
        self.device = torch.device(device)
        self.precision = precision
        cfg = model.cfg
        self.latent_dim, self.grid_hw = cfg.latent_dim, (cfg.height, cfg.width)

    def _autocast(self):
        if self.precision == "bf16" and self.device.type == "cuda":
            return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return None

    @torch.no_grad()
    def __call__(self, requests: list[Request], progress: Progress | None = None) -> list[np.ndarray]:
        if not requests:
            return []
        keys = {batch_key(r) for r in requests}
        if len(keys) != 1:
            raise ValueError(f"Sampler: requests of different shapes or schedules cannot share a batch ({keys})")
        first = requests[0]
        dev = self.device
        T = first.steps
        steps, kind = first.spec.sampler.steps, first.spec.sampler.schedule
        k = first.context or ROLLOUT_CONTEXT
        noise = torch.stack([noise_for(r, self.latent_dim, self.grid_hw) for r in requests])   # (B, T, N, L, H, W)
        given_raw = torch.stack([torch.from_numpy(r.given) if r.given is not None else torch.zeros(noise.shape[1:])
                                 for r in requests])
        given = normalize(given_raw, self.mean, self.std)
        clean = _stack([r.clean for r in requests])                                              # (B, T, N, H, W)
        cond = {name: _stack([r.cond[name] for r in requests]).to(dev) for name in first.cond}
        camera = {name: _stack([r.camera[name] for r in requests]).to(dev) for name in first.camera}
        timestamps = _stack([r.timestamps for r in requests]).float()
        guidance = self._guidance(requests, cond) if first.guided else None

        if first.tau_start >= 1.0:   # editing at the end of the schedule: nothing to do
            return [r.given.copy() for r in requests]
        taus = schedule(kind, steps)
        if first.tau_start > 0:
            taus = truncate_schedule(taus, first.tau_start)
        plan = windows(T, self.window, k)
        out = torch.zeros_like(noise)
        state = {"window": 0, "windows": len(plan), "step": 0, "steps": len(taus) - 1}

        def tick() -> None:
            state["step"] += 1
            if progress is not None:
                progress(dict(state))

        for w, (s, e, ctx) in enumerate(plan):
            state.update(window=w, step=0)
            wclean = clean[:, s:e].clone()
            wclean[:, :ctx] = True
            wgiven = given[:, s:e].clone()
            wgiven[:, :ctx] = out[:, s:s + ctx]
            if first.tau_start > 0:
                x0 = interpolate(wgiven, noise[:, s:e], torch.full((len(requests),), first.tau_start))
            else:
                x0 = noise[:, s:e]
            context_len = torch.full((len(requests),), ctx if ctx else first.context, dtype=torch.long)
            seconds = present_relative(timestamps[:, s:e], context_len).to(dev)
            wcond = _window(cond, s, e)
            wguide = None
            if guidance is not None:
                wguide = GuidanceBatch(
                    scale=guidance.scale, time_weight=guidance.time_weight[:, s:e], interval=guidance.interval,
                    uncond=_window(guidance.uncond, s, e),
                    keep=guidance.keep, cells=guidance.cells[:, s:e] if guidance.cells is not None else None)
            velocity = GuidedVelocity(self.model, wcond, seconds, camera, wguide, self._autocast(), tick)
            x = euler_sample(velocity, x0.to(dev), taus, clean=wgiven.to(dev), clean_mask=wclean.to(dev))
            out[:, s:e] = x.cpu()
        raw = denormalize(out, self.mean, self.std)
        # Given latents come back bit for bit (normalising and back would round them).
        raw = torch.where(clean[:, :, :, None], given_raw, raw)
        return [raw[i].numpy().astype(np.float32) for i in range(len(requests))]

    def _guidance(self, requests: list[Request], cond: dict[str, Tensor]) -> GuidanceBatch:
        dev = self.device
        T = requests[0].steps
        uncond = {}
        for name in cond:
            rows = [(r.negative if r.negative is not None else r.cond)[name] for r in requests]
            uncond[name] = _stack(rows).to(dev)
        keep = {v: torch.tensor([v not in r.drop for r in requests], dtype=torch.bool, device=dev) for v in VARIABLES}
        time_weight = _stack([r.guidance_time if r.guidance_time is not None else np.ones(T, np.float32)
                              for r in requests]).float().to(dev)
        cells = None
        if any(r.guidance_cells is not None for r in requests):
            cells = _stack([r.guidance_cells if r.guidance_cells is not None
                            else np.ones_like(requests[0].clean) for r in requests]).to(dev)
        return GuidanceBatch(scale=torch.tensor([r.guidance_scale for r in requests], dtype=torch.float32, device=dev),
                             time_weight=time_weight,
                             interval=torch.tensor([r.guidance_interval for r in requests], dtype=torch.float32,
                                                   device=dev),
                             uncond=uncond, keep=keep, cells=cells)
