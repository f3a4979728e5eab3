"""Tokenizer decoder (GAIA-2 section 2.1.2): latents decoded jointly with space-time attention.

Temporal strides. The paper lists up-sampling strides 1x2x2, 2x2x2 and 2x8x8: time x4, yet the
encoder reduces time x8 (2x input frame striding, then x2, x2) and 3 latents must give back all
24 frames. We undo the input striding in the last block: its stride is 4x8x8 (``paper`` preset's
``decoder_out_stride``), i.e. the final conv emits 3 * 4 * 8 * 8 channels that depth-to-space
turns into 4 frames of 8x8 pixels per token. The frames the encoder skipped are thus predicted
by the decoder rather than interpolated afterwards, and every pixel of every frame is supervised.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaia2.nn import sincos_3d
from gaia2.tokenizer.blocks import SpaceTimeBlock, UpConv
from gaia2.tokenizer.config import TokenizerConfig


class Decoder(nn.Module):
    """latents (B, L, T', H', W') -> video (B, 3, T' * 8, H' * s, W' * s), unbounded (trained towards [-1, 1]).

    Paper preset: linear L -> 512, up 1x2x2 (-> T' x 28 x 60), 16 space-time blocks, up 2x2x2
    (-> 2T' x 56 x 120), 8 space-time blocks, up 4x8x8 to RGB (-> 8T' x 448 x 960). All T' latents
    attend to each other: call it on a window of ``decoder_window`` latents (see
    ``Tokenizer.decode_video`` for longer videos).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.from_latent = nn.Linear(cfg.latent_dim, cfg.dim)
        self.up_in = UpConv(cfg.dim, cfg.dim, cfg.decoder_in_stride)
        self.blocks1 = nn.ModuleList(SpaceTimeBlock(cfg.dim, cfg.heads, cfg.mlp_ratio)
                                     for _ in range(cfg.decoder_depths[0]))
        self.norm_mid = nn.LayerNorm(cfg.dim)
        self.up_mid = UpConv(cfg.dim, cfg.dim, cfg.decoder_mid_stride)
        self.blocks2 = nn.ModuleList(SpaceTimeBlock(cfg.dim, cfg.heads, cfg.mlp_ratio)
                                     for _ in range(cfg.decoder_depths[1]))
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.up_out = UpConv(cfg.dim, 3, cfg.decoder_out_stride)

    def _run(self, blocks: nn.ModuleList, x: Tensor) -> Tensor:
        """x (B, T, H, W, D) -> same shape; positions re-added at each stage input (grid changed)."""
        t, h, w = x.shape[1:4]
        x = x + sincos_3d(t, h, w, self.cfg.dim, x.device).to(x.dtype)
        for block in blocks:   # activation checkpointing, when wanted, wraps them (jobs/parallelize.py)
            x = block(x)
        return x

    def forward(self, latents: Tensor) -> Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"Decoder: latents must be (B, {self.cfg.latent_dim}, T', H', W'), "
                             f"got {tuple(latents.shape)}")
        x = self.from_latent(rearrange(latents, "b l t h w -> b t h w l"))
        x = self.up_in(rearrange(x, "b t h w c -> b c t h w"))
        x = self._run(self.blocks1, rearrange(x, "b c t h w -> b t h w c"))
        x = self.up_mid(rearrange(self.norm_mid(x), "b t h w c -> b c t h w"))
        x = self._run(self.blocks2, rearrange(x, "b c t h w -> b t h w c"))
        x = F.silu(self.norm_out(x))
        return self.up_out(rearrange(x, "b t h w c -> b c t h w"))
