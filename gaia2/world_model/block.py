"""The world model's space-time factorised transformer block (paper section 2.2.1).

    h = x + pos;  x += SpatialAttn(LN(h))     over cameras x height x width, per time step
    h = x + pos;  x += TemporalAttn(LN(h))    over time, per camera and grid cell
    h = x + pos;  x += CrossAttn(LN(h), c_t)  to the conditioning tokens of the same time step
    h = x + pos;  x += gate * MLP(LN(h) * (1 + scale) + shift),  (shift, scale, gate) = AdaLN(tau + action)

The positional encodings are added to each sub-layer's input, not to the residual stream, so a block
whose attention output projections and modulation are zero is exactly the identity (the model
initialises them so). Adaptive layer norm drives the MLP: with C = 4096 that is 3C^2 parameters per
block, which is what makes 22 blocks come to the paper's 8.4B (adaLN on all four sub-layers would give
10.7B). Every attention normalises queries and keys (QK-norm).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from gaia2.world_model.config import WorldModelConfig
from gaia2.world_model.layers import MLP, AdaLNModulation, QKNormAttention, modulate


class SpaceTimeBlock(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        d, h, eps = cfg.dim, cfg.heads, cfg.qk_norm_eps
        self.norm_spatial = nn.LayerNorm(d)
        self.spatial = QKNormAttention(d, h, eps)
        self.norm_temporal = nn.LayerNorm(d)
        self.temporal = QKNormAttention(d, h, eps)
        self.norm_cross = nn.LayerNorm(d)
        self.cross = QKNormAttention(d, h, eps, cross=True)
        self.norm_mlp = nn.LayerNorm(d, elementwise_affine=False)   # adaLN supplies scale and shift
        self.mlp = MLP(d, cfg.mlp_ratio)
        self.modulation = AdaLNModulation(d, 3)

    def forward(self, x: Tensor, pos: Tensor, cond: Tensor, tokens: Tensor, token_mask: Tensor,
                camera_mask: Tensor | None = None) -> Tensor:
        """x, pos (B, T, N, H, W, C); cond (B, T, C) = flow-time + action embedding; tokens (B, T, K, C),
        token_mask (B, T, K) bool; camera_mask (B, N) bool (False = dropped camera: not attended) or None."""
        b, t, n, hh, ww, c = x.shape
        spatial_keys = None
        if camera_mask is not None:
            spatial_keys = camera_mask[:, None, :, None].expand(b, t, n, hh * ww).reshape(b * t, n * hh * ww)

        s = rearrange(self.norm_spatial(x + pos), "b t n h w c -> (b t) (n h w) c")
        s = self.spatial(s, key_mask=spatial_keys)
        x = x + rearrange(s, "(b t) (n h w) c -> b t n h w c", b=b, n=n, h=hh)

        m = rearrange(self.norm_temporal(x + pos), "b t n h w c -> (b n h w) t c")
        m = self.temporal(m)
        x = x + rearrange(m, "(b n h w) t c -> b t n h w c", b=b, n=n, h=hh)

        q = rearrange(self.norm_cross(x + pos), "b t n h w c -> (b t) (n h w) c")
        q = self.cross(q, context=tokens.flatten(0, 1), key_mask=token_mask.flatten(0, 1))
        x = x + rearrange(q, "(b t) (n h w) c -> b t n h w c", b=b, n=n, h=hh)

        shift, scale, gate = (v[:, :, None, None, None] for v in self.modulation(cond))   # (B, T, 1, 1, 1, C)
        return x + gate * self.mlp(modulate(self.norm_mlp(x + pos), shift, scale))
