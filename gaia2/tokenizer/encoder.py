"""Tokenizer encoder (GAIA-2 section 2.1.1): each chunk of ``temporal_factor`` frames -> one latent.

Chunk independence is structural: chunks are folded into the batch before the first layer, the
convolutions zero-pad at chunk borders, and the transformer blocks attend only within a frame.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from gaia2.nn import sincos_2d
from gaia2.tokenizer.blocks import DownConv, SpatialBlock
from gaia2.tokenizer.config import TokenizerConfig


class Encoder(nn.Module):
    """video (B, 3, T, H, W) in [-1, 1] -> (mean, log_std), each (B, L, T/8, H/s, W/s), s = spatial factor.

    Paper preset per 8-frame chunk: keep every 2nd frame (8 -> 4), conv 2x8x8 (4 x 448 x 960 ->
    2 x 56 x 120), conv 2x2x2 (-> 1 x 28 x 60), 24 spatial blocks, conv 1x2x2 (-> 1 x 14 x 30),
    linear to 2L channels (mean, log-std).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch = DownConv(3, cfg.dim, cfg.patch_stride)
        self.down = DownConv(cfg.dim, cfg.dim, cfg.down_stride)
        self.blocks = nn.ModuleList(SpatialBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.encoder_depth))
        self.out_down = DownConv(cfg.dim, cfg.dim, cfg.out_stride)
        self.norm = nn.LayerNorm(cfg.dim)
        self.to_moments = nn.Linear(cfg.dim, 2 * cfg.latent_dim)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"Encoder: video must be (B, 3, T, H, W), got {tuple(video.shape)}")
        b, _, t, h, w = video.shape
        f = cfg.temporal_factor
        if t % f:
            raise ValueError(f"Encoder: {t} frames is not a multiple of the temporal factor {f}")
        for axis, n in (("height", h), ("width", w)):
            if n % cfg.spatial_factor:
                raise ValueError(f"Encoder: {axis} {n} is not divisible by the spatial factor {cfg.spatial_factor}")
        x = rearrange(video, "b c (n f) h w -> (b n) c f h w", f=f)     # each chunk on its own
        x = x[:, :, ::cfg.input_time_stride]                              # (B*n, 3, f/2, H, W)
        x = self.down(self.patch(x))            # (B*n, D, out_t, H*out_h/s, W*out_w/s), out_* = out_stride
        x = rearrange(x, "b c t h w -> b t h w c")
        x = x + sincos_2d(x.shape[2], x.shape[3], cfg.dim, x.device).to(x.dtype)
        for block in self.blocks:   # activation checkpointing, when wanted, wraps them (jobs/parallelize.py)
            x = block(x)
        x = self.out_down(rearrange(x, "b t h w c -> b c t h w"))         # (B*n, D, 1, H/s, W/s)
        moments = self.to_moments(self.norm(rearrange(x, "b c t h w -> b t h w c")))
        moments = rearrange(moments, "(b n) t h w c -> b c (n t) h w", b=b)  # t == 1
        mean, log_std = moments.chunk(2, dim=1)
        return mean, log_std.clamp(cfg.log_std_min, cfg.log_std_max)
