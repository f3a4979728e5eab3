"""Configuration of the world model's conditioning encoders (nested in ``WorldModelConfig.conditioning``)."""

from __future__ import annotations

from pydantic import Field

from gaia2.config.base import StrictModel


class ConditioningConfig(StrictModel):
    """Sizes of the conditioning inputs the encoders accept, and the training-time dropout rates (paper
    section 2.2.3: each variable 0.8, all together 0.1, agent features 0.3, cameras 0.1)."""
    max_cameras: int = Field(6, gt=0, description="camera slots of the agent / CLIP camera embeddings")
    max_agents: int = Field(32, gt=0, description="A: agent box slots per camera and step")
    clip_dim: int = Field(16, gt=0, description="D_clip: CLIP embedding width")
    scenario_dim: int = Field(32, gt=0, description="D_scenario: external scenario embedding width")
    feature_dropout: float = Field(0.3, ge=0, le=1, description="agent feature-dimension dropout (training)")
    p_each: float = Field(0.8, ge=0, le=1, description="each conditioning variable dropped with this probability")
    p_all: float = Field(0.1, ge=0, le=1, description="all conditioning variables dropped together")
    camera_dropout: float = Field(0.1, ge=0, lt=1, description="input camera views dropped with this probability")
