"""The GAIA-2 latent world model: a space-time factorised transformer predicting flow-matching velocities.

    v = WorldModel(x_tau, tau, conditioning, timestamps, camera geometry)

x (B, T, N, L, H, W) normalised latents (context steps clean, the rest interpolated with noise); tau
(B, T) flow time per latent step (1 = data: context steps carry 1); the conditioning dict of
``gaia2.conditioning`` (action, agents, metadata, CLIP, scenario); timestamps (B, T, N) in seconds relative
to the present, per camera (or (B, T), shared by every camera); camera geometry per camera. Output: the predicted velocity, shaped like x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia2.conditioning.encoder import ConditioningEncoder
from gaia2.nn import sinusoidal
from gaia2.world_model.block import SpaceTimeBlock
from gaia2.world_model.config import WorldModelConfig
from gaia2.world_model.layers import AdaLNModulation, QKNormAttention, modulate
from gaia2.world_model.positional import PositionalEncoding


class FlowTimeEmbedding(nn.Module):
    """tau (B, T) in [0, 1] -> (B, T, C): sinusoids of 1000 tau (DiT's timestep scale) and an MLP."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.frequencies = cfg.tau_frequencies
        self.fc1 = nn.Linear(2 * cfg.tau_frequencies, cfg.dim)
        self.fc2 = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, tau: Tensor) -> Tensor:
        feats = sinusoidal(1000.0 * tau, self.frequencies).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(feats)))


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_in = nn.Linear(cfg.latent_dim, cfg.dim)
        self.flow_time = FlowTimeEmbedding(cfg)
        self.conditioning = ConditioningEncoder(cfg.conditioning, cfg.dim)
        self.positions = PositionalEncoding(cfg)
        self.blocks = nn.ModuleList(SpaceTimeBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.modulation_out = AdaLNModulation(cfg.dim, 2)
        self.latent_out = nn.Linear(cfg.dim, cfg.latent_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """Linear layers of the trunk: Xavier-uniform, zero bias. Zeroed so that every block starts as the
        identity and the model predicts v = 0: each attention's output projection, each adaptive-layer-norm
        modulation (MLP gate 0, shift 0, scale 0) and the output projection (DiT's adaLN-Zero). The
        conditioning encoders keep their own initialisation (``gaia2.conditioning``)."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("conditioning"):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, QKNormAttention):
                nn.init.zeros_(m.proj.weight)
                nn.init.zeros_(m.proj.bias)
            elif isinstance(m, AdaLNModulation):
                nn.init.zeros_(m.linear.weight)
                nn.init.zeros_(m.linear.bias)
        nn.init.zeros_(self.latent_out.weight)
        nn.init.zeros_(self.latent_out.bias)

    def forward(self, x: Tensor, tau: Tensor, cond: dict[str, Tensor], timestamps: Tensor,
                camera: dict[str, Tensor], keep: dict[str, Tensor] | None = None,
                camera_mask: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """x (B, T, N, L, H, W); tau (B, T); cond: the conditioning dict of ``gaia2.conditioning`` (action,
        agents, agents_valid, metadata, clip, optional scenario / scenario_valid / camera_valid); timestamps (B, T, N)
        seconds relative to the present per camera, or (B, T) shared by all cameras;
        camera: intrinsics (B, N, 4), extrinsics (B, N, 4, 4), distortion (B, N, 5); keep: per-variable
        keep masks (training dropout / classifier-free guidance; None = keep all); camera_mask (B, N) bool
        (False = a dropped camera view: its latents are zeroed and no other token attends to it)
        -> velocity (B, T, N, L, H, W)."""
        cfg = self.cfg
        if x.ndim != 6 or x.shape[3] != cfg.latent_dim:
            raise ValueError(f"WorldModel: x must be (B, T, N, {cfg.latent_dim}, H, W), got {tuple(x.shape)}")
        b, t, n, _, hh, ww = x.shape
        if tau.shape != (b, t):
            raise ValueError(f"WorldModel: tau must be (B, T) = {(b, t)}, got {tuple(tau.shape)}")
        if timestamps.shape not in ((b, t), (b, t, n)):
            raise ValueError(f"WorldModel: timestamps must be (B, T, N) = {(b, t, n)} (per camera) or (B, T) = "
                             f"{(b, t)}, got {tuple(timestamps.shape)}")
        if camera_mask is not None:
            x = x * camera_mask[:, None, :, None, None, None].to(x.dtype)
        h = self.latent_in(x.permute(0, 1, 2, 4, 5, 3))                     # (B, T, N, H, W, C)
        out = self.conditioning(cond, keep, generator=generator)
        cond_vec = self.flow_time(tau) + out.action                          # (B, T, C)
        pos = self.positions(timestamps, camera, hh, ww).to(h.dtype)         # (B, T, N, H, W, C)
        for block in self.blocks:   # activation checkpointing, when wanted, wraps them (jobs/parallelize.py)
            h = block(h, pos, cond_vec, out.tokens, out.mask, camera_mask)
        shift, scale = (v[:, :, None, None, None] for v in self.modulation_out(cond_vec))
        v = self.latent_out(modulate(self.norm_out(h), shift, scale))       # (B, T, N, H, W, L)
        return v.permute(0, 1, 2, 5, 3, 4)
