"""Configuration of the latent world model: presets ``paper`` (GAIA-2 section 2.2.1) and ``tiny`` (CPU, tests).

The training sample is ``latent_steps`` x ``cameras`` x ``height`` x ``width`` tokens of
``latent_dim`` channels: (6, 5, 14, 30) x 64 for ``paper`` (48 frames, 5 cameras, 448 x 960 through
the tokenizer) = 12,600 tokens.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field, model_validator

from gaia2.conditioning.config import ConditioningConfig
from gaia2.config.base import StrictModel, build_config


class WorldModelConfig(StrictModel):
    preset: str = "tiny"
    # The training sample (in latents).
    latent_steps: int = Field(6, gt=0, description="T: latent time steps per training sample (48 video frames / 8)")
    cameras: int = Field(5, gt=0, description="N: cameras per training sample")
    height: int = Field(4, gt=0, description="H: latent grid height")
    width: int = Field(8, gt=0, description="W: latent grid width")
    latent_dim: int = Field(16, gt=0, description="L: channels per latent token (the tokenizer's)")

    # The transformer.
    dim: int = Field(64, gt=0, description="C: hidden width")
    depth: int = Field(2, gt=0, description="space-time factorised blocks")
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    qk_norm_eps: float = Field(1e-6, gt=0)
    tau_frequencies: int = Field(128, gt=0, description="sinusoidal features of the flow time (x2: sin, cos)")
    time_frequencies: int = Field(16, gt=0, description="Fourier features of the normalised timestamp (x2)")
    time_horizon_s: float = Field(4.0, gt=0, description="seconds that map to +-1 in the timestamp encoding")

    conditioning: ConditioningConfig = Field(default_factory=ConditioningConfig,
                                             description="sizes of the conditioning inputs, dropout rates")

    @property
    def tokens(self) -> int:
        """Tokens of one training sample: T x N x H x W."""
        return self.latent_steps * self.cameras * self.height * self.width

    @model_validator(mode="after")
    def _check(self) -> "WorldModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim: {self.dim} is not divisible by heads {self.heads}")
        if self.dim % 4:
            raise ValueError(f"dim: {self.dim} must be a multiple of 4 (2-D sinusoidal position encoding)")
        if self.cameras > self.conditioning.max_cameras:
            raise ValueError(f"cameras: {self.cameras} is more than conditioning.max_cameras "
                             f"{self.conditioning.max_cameras}")
        return self


def paper() -> WorldModelConfig:
    """GAIA-2 section 2.2.1: 22 blocks, C = 4096, 32 heads; (6, 5, 14, 30) latents of 64 channels.

    Conditioning sizes: CLIP ViT-L/14 image embeddings (768), 64 agent slots (the paper shard preset).
    """
    return WorldModelConfig(
        preset="paper", latent_steps=6, cameras=5, height=14, width=30, latent_dim=64,
        dim=4096, depth=22, heads=32, mlp_ratio=4.0, time_horizon_s=4.0,
        conditioning=ConditioningConfig(max_cameras=6, max_agents=64, clip_dim=768, scenario_dim=512),
    )


def tiny() -> WorldModelConfig:
    """Same classes, small enough to learn on a CPU: the tiny tokenizer's (6, N, 4, 8) x 16 latents."""
    return WorldModelConfig(preset="tiny")


PRESETS = {"paper": paper, "tiny": tiny}


def world_model_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                       path: str | None = None) -> WorldModelConfig:
    """Preset -> YAML file -> overrides; raises ``ConfigError`` naming each bad field."""
    return build_config(WorldModelConfig, PRESETS, preset=preset, overrides=overrides, path=path)
