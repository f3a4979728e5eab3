"""Configuration of the video tokenizer: presets ``paper`` (GAIA-2 section 2.1) and ``tiny`` (CPU, tests).

Strides are (time, height, width). The encoder's temporal factor is
``input_time_stride * patch_stride[0] * down_stride[0] * out_stride[0]`` (8 in both presets: one
latent per 8 frames) and its spatial factor the product of the height strides (32 for ``paper``,
8 for ``tiny``). The decoder's three up-sampling strides must multiply to the same factors, so
that ``decode(encode(video))`` has the video's shape.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from pydantic import Field, model_validator

from gaia2.config.base import StrictModel, build_config

Stride = tuple[int, int, int]


class TokenizerConfig(StrictModel):
    preset: str = "tiny"
    # Clip the tokenizer is trained on: (frames, height, width) of the input video.
    frames: int = Field(24, gt=0, description="T_v: frames per training clip")
    height: int = Field(32, gt=0)
    width: int = Field(64, gt=0)
    latent_dim: int = Field(16, gt=0, description="L: channels per latent token")

    dim: int = Field(64, gt=0, description="transformer width of encoder and decoder")
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)

    # Encoder: frame striding, conv down-sampling, spatial transformer, conv down-sampling, linear to 2L.
    input_time_stride: int = Field(2, gt=0, description="keep every n-th input frame before the first conv")
    patch_stride: Stride = Field((2, 2, 2), description="first down-sampling conv (from RGB)")
    down_stride: Stride = Field((2, 2, 2), description="second down-sampling conv")
    encoder_depth: int = Field(2, ge=0, description="spatial transformer blocks")
    out_stride: Stride = Field((1, 2, 2), description="down-sampling conv after the transformer")

    # Decoder: linear + depth-to-space, space-time blocks, up, space-time blocks, up to RGB.
    decoder_in_stride: Stride = Field((1, 2, 2))
    decoder_depths: tuple[int, int] = Field((1, 1), description="space-time blocks before / after the middle up")
    decoder_mid_stride: Stride = Field((2, 2, 2))
    decoder_out_stride: Stride = Field((4, 2, 2), description="final up-sampling to RGB; its time stride also "
                                                              "undoes input_time_stride")
    decoder_window: int = Field(3, gt=0, description="latents the decoder decodes jointly (rolling window width)")

    log_std_min: float = Field(-10.0, description="encoder log-std is clamped to [log_std_min, log_std_max]")
    log_std_max: float = Field(2.0)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent."""
        return self.input_time_stride * self.patch_stride[0] * self.down_stride[0] * self.out_stride[0]

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent token along height (and width: validation makes both equal)."""
        return self.patch_stride[1] * self.down_stride[1] * self.out_stride[1]

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(T', H', W', L) of a ``frames x height x width`` clip."""
        return (self.frames // self.temporal_factor, self.height // self.spatial_factor,
                self.width // self.spatial_factor, self.latent_dim)

    @property
    def compression(self) -> float:
        """Input values over latent values: T*H*W*3 / (T'*H'*W'*L)."""
        return self.frames * self.height * self.width * 3 / math.prod(self.latent_shape)

    @model_validator(mode="after")
    def _check(self) -> "TokenizerConfig":
        for name in ("patch_stride", "down_stride", "out_stride",
                     "decoder_in_stride", "decoder_mid_stride", "decoder_out_stride"):
            if any(s < 1 for s in getattr(self, name)):
                raise ValueError(f"{name}: strides must be >= 1 (got {getattr(self, name)})")
        enc_w = self.patch_stride[2] * self.down_stride[2] * self.out_stride[2]
        if enc_w != self.spatial_factor:
            raise ValueError(f"patch_stride/down_stride/out_stride: height factor {self.spatial_factor} "
                             f"and width factor {enc_w} must be equal")
        strides = (self.decoder_in_stride, self.decoder_mid_stride, self.decoder_out_stride)
        dec = tuple(math.prod(s[i] for s in strides) for i in range(3))
        enc = (self.temporal_factor, self.spatial_factor, self.spatial_factor)
        if dec != enc:
            raise ValueError(f"decoder_in_stride/decoder_mid_stride/decoder_out_stride: multiply to {dec} "
                             f"(time, height, width) but the encoder downsamples by {enc}")
        if self.frames % self.temporal_factor:
            raise ValueError(f"frames: {self.frames} is not a multiple of the temporal factor "
                             f"{self.temporal_factor}")
        for name in ("height", "width"):
            if getattr(self, name) % self.spatial_factor:
                raise ValueError(f"{name}: {getattr(self, name)} is not divisible by the spatial factor "
                                 f"{self.spatial_factor}")
        if self.dim % self.heads:
            raise ValueError(f"dim: {self.dim} is not divisible by heads {self.heads}")
        if self.dim % 4:
            raise ValueError(f"dim: {self.dim} must be a multiple of 4 (sinusoidal 2-D position encoding)")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min: {self.log_std_min} must be below log_std_max {self.log_std_max}")
        return self


def paper() -> TokenizerConfig:
    """GAIA-2 section 2.1: 24 x 448 x 960 -> latents (3, 14, 30, 64), compression 384."""
    return TokenizerConfig(
        preset="paper", frames=24, height=448, width=960, latent_dim=64, dim=512, heads=16,
        input_time_stride=2, patch_stride=(2, 8, 8), down_stride=(2, 2, 2), encoder_depth=24,
        out_stride=(1, 2, 2), decoder_in_stride=(1, 2, 2), decoder_depths=(16, 8),
        decoder_mid_stride=(2, 2, 2), decoder_out_stride=(4, 8, 8), decoder_window=3,
    )


def tiny() -> TokenizerConfig:
    """Same classes, small enough to learn on a CPU: 24 x 32 x 64 -> latents (3, 4, 8, 16), compression 96.

    The spatial factor is 8 instead of 32 so that a 32 x 64 frame still gives a 4 x 8 latent grid.
    """
    return TokenizerConfig(preset="tiny")


PRESETS = {"paper": paper, "tiny": tiny}


def tokenizer_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                     path: str | None = None) -> TokenizerConfig:
    """Preset -> YAML file -> overrides; raises ``ConfigError`` naming each bad field."""
    return build_config(TokenizerConfig, PRESETS, preset=preset, overrides=overrides, path=path)
