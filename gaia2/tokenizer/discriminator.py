"""3-D convolutional GAN discriminator for the tokenizer's decoder fine-tune (GAIA-2 section 2.1.3).

After the autoencoder is trained, the encoder is frozen and the decoder is fine-tuned with the
reconstruction losses plus ``gan.weight`` times the non-saturating GAN loss of this discriminator,
which is itself trained with AdamW at ``gan.disc_lr`` (the training config's ``GanConfig``; the paper
preset's 0.1 and 1e-5, paper section 4). The architecture follows the paper: base 64 channels,
residual 3-D conv stages with channel multipliers [2, 4, 8, 8], each downsampling by 2 in time and
space with 3-D blur pooling (Zhang 2019), 3-D instance norm, LeakyReLU 0.2, spectral norm on every
conv, softplus losses. It outputs patch logits: one real/fake score per space-time receptive field,
not one per video.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gaia2.config.base import StrictModel, build_config


class DiscriminatorConfig(StrictModel):
    preset: str = "tiny"
    in_channels: int = Field(3, gt=0, description="RGB")
    base_channels: int = Field(64, gt=0, description="width of the stem conv; stage i has base * multipliers[i]")
    multipliers: tuple[int, ...] = Field((2, 4, 8, 8), description="one downsampling stage per multiplier")
    leaky_slope: float = Field(0.2, ge=0, lt=1, description="LeakyReLU negative slope")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.multipliers)

    @property
    def downsample_factor(self) -> int:
        """Time, height and width each shrink by this factor (rounded up at every stage)."""
        return 2 ** len(self.multipliers)

    @model_validator(mode="after")
    def _check(self) -> "DiscriminatorConfig":
        if not self.multipliers:
            raise ValueError("multipliers: need at least one stage")
        if any(m < 1 for m in self.multipliers):
            raise ValueError(f"multipliers: each must be >= 1 (got {self.multipliers})")
        return self


def paper() -> DiscriminatorConfig:
    """Paper section 2.1.3: base 64, multipliers [2, 4, 8, 8] (stage widths 128, 256, 512, 512)."""
    return DiscriminatorConfig(preset="paper", base_channels=64, multipliers=(2, 4, 8, 8))


def tiny() -> DiscriminatorConfig:
    """Same stages at base 4 (widths 8, 16, 32, 32): trains in seconds on a CPU."""
    return DiscriminatorConfig(preset="tiny", base_channels=4, multipliers=(2, 4, 8, 8))


PRESETS = {"paper": paper, "tiny": tiny}


def discriminator_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                         path: str | None = None) -> DiscriminatorConfig:
    """Preset -> YAML file -> overrides; raises ``ConfigError`` naming each bad field."""
    return build_config(DiscriminatorConfig, PRESETS, preset=preset, overrides=overrides, path=path)


def blur_kernel_3d() -> Tensor:
    """(3, 3, 3) binomial low-pass [1, 2, 1] x [1, 2, 1] x [1, 2, 1] / 64: sums to 1, symmetric."""
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    return k[:, None, None] * k[None, :, None] * k[None, None, :]


class BlurPool3d(nn.Module):
    """Anti-aliased downsampling (Zhang 2019): low-pass with ``blur_kernel_3d`` then keep every
    second sample along time, height and width. (B, C, T, H, W) -> (B, C, ceil(T/2), ceil(H/2), ceil(W/2)).

    Each axis is replicate-padded by 1 first, so that a constant video stays exactly constant
    (zero padding would darken the borders) and an axis of length 1 (a clip already reduced to one
    step in time) stays length 1 instead of failing.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # Fixed, not learned; non-persistent so checkpoints do not carry a constant.
        kernel = blur_kernel_3d()[None, None].expand(channels, 1, 3, 3, 3).contiguous()
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
        # Depthwise: each channel is blurred on its own.
        return F.conv3d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


def sn_conv3d(c_in: int, c_out: int, kernel_size: int) -> nn.Conv3d:
    """Spectral-normalised ``kernel_size``^3 conv with 'same' padding, stride 1."""
    return spectral_norm(nn.Conv3d(c_in, c_out, kernel_size, padding=kernel_size // 2))


class DownBlock(nn.Module):
    """Residual stage, (B, C_in, T, H, W) -> (B, C_out, ceil(T/2), ceil(H/2), ceil(W/2)).

    Main path: 3x3x3 conv, blur pool, instance norm, LeakyReLU. Skip: blur pool, 1x1x1 conv (to
    match channels). The sum is scaled by 1/sqrt(2) so the two unit-scale paths keep unit scale.
    """

    def __init__(self, c_in: int, c_out: int, slope: float) -> None:
        super().__init__()
        self.conv = sn_conv3d(c_in, c_out, 3)
        self.pool = BlurPool3d(c_out)
        self.norm = nn.InstanceNorm3d(c_out, affine=True)
        self.act = nn.LeakyReLU(slope)
        self.skip_pool = BlurPool3d(c_in)
        self.skip = sn_conv3d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        main = self.act(self.norm(self.pool(self.conv(x))))
        return (main + self.skip(self.skip_pool(x))) / math.sqrt(2)


class Discriminator3D(nn.Module):
    """video (B, 3, T, H, W) in [-1, 1] -> patch logits (B, 1, T', H', W'), where each of T', H', W'
    is its input length halved (rounded up) once per stage: 4 stages give (2, 28, 60) for a
    24 x 448 x 960 clip.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # No norm on the stem: instance norm straight on RGB would discard each clip's colour statistics.
        self.stem = sn_conv3d(cfg.in_channels, cfg.base_channels, 3)
        self.stem_act = nn.LeakyReLU(cfg.leaky_slope)
        widths = (cfg.base_channels, *cfg.stage_channels)
        self.blocks = nn.ModuleList(DownBlock(a, b, cfg.leaky_slope) for a, b in zip(widths[:-1], widths[1:]))
        self.head = sn_conv3d(widths[-1], 1, 3)

    def forward(self, video: Tensor) -> Tensor:
        if video.ndim != 5 or video.shape[1] != self.cfg.in_channels:
            raise ValueError(f"Discriminator3D: expected video (B, {self.cfg.in_channels}, T, H, W), "
                             f"got shape {tuple(video.shape)}")
        x = self.stem_act(self.stem(video))        # (B, base, T, H, W)
        for block in self.blocks:
            x = block(x)                           # (B, base * m, ceil(T/2), ceil(H/2), ceil(W/2))
        return self.head(x)                        # (B, 1, T', H', W')


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Original GAN discriminator loss, -log sigmoid(real) - log(1 - sigmoid(fake)), written with
    softplus for stability: mean softplus(-real) + mean softplus(fake). Logits of any shape -> scalar.

    Pass ``fake_logits`` of detached decoder outputs so this loss does not train the decoder.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log sigmoid(fake) = mean softplus(-fake). Logits -> scalar;
    the decoder's fine-tune loss adds ``gan.weight`` times this."""
    return F.softplus(-fake_logits).mean()
