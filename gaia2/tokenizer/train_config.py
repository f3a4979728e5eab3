"""Configuration of tokenizer training (paper section 4): presets ``paper`` and ``tiny``.

``paper``: 300,000 steps at batch 128 (one clip per H100, 128 workers), AdamW lr 1e-4 with 2,500
warm-up and 5,000 cool-down steps to 1e-5, betas (0.9, 0.95), weight decay 0.1, clipping 1.0, EMA
0.9999, then 20,000 decoder-only GAN steps (weight 0.1, discriminator lr 1e-5).

``tiny``: the same losses and stages, sized to learn on two CPU cores in minutes. A short run needs
a larger learning rate and a shorter EMA horizon than the paper's (an EMA of 0.9999 would still be
the initial weights after a few hundred steps), so those two differ; everything else is the paper's.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from pydantic import Field, model_validator

from gaia2.config.base import ConfigError, StrictModel, build_config, derived
from gaia2.config.training import DataConfig, OptimConfig, ScheduleConfig, TrainConfig, WorkersConfig
from gaia2.tokenizer import config as model_presets
from gaia2.tokenizer import discriminator as disc_presets
from gaia2.tokenizer.config import TokenizerConfig
from gaia2.tokenizer.discriminator import DiscriminatorConfig
from gaia2.tokenizer.losses import LossWeights, lpips_backbone_cache_path


class GanConfig(StrictModel):
    """Decoder fine-tune after the main stage: encoder frozen, reconstruction losses + weight x adversarial."""
    steps: int = Field(ge=0, description="fine-tune steps after the main stage (0 = none)")
    weight: float = Field(ge=0, description="weight of the adversarial loss")
    disc_lr: float = Field(gt=0, description="discriminator learning rate (constant)")
    lr: float = Field(gt=0, description="decoder learning rate during the fine-tune (constant; the main stage "
                                        "ends at optim.final_lr)")
    discriminator: DiscriminatorConfig


class TokenizerSchedule(ScheduleConfig):
    preview_clips: int = Field(4, ge=0, description="validation clips in the reconstruction video artifact")


class TokenizerTrainConfig(TrainConfig):
    model: TokenizerConfig
    # DINO needs a local path, which a preset cannot know: the paper's weights are set unvalidated, and a
    # config without a path fails when it is built (build_config validates everything), naming loss.dino_path.
    loss: LossWeights = Field(default_factory=LossWeights.model_construct)
    gan: GanConfig
    schedule: TokenizerSchedule

    @property
    def total_steps(self) -> int:
        return self.schedule.steps + self.gan.steps

    @model_validator(mode="after")
    def _check(self) -> "TokenizerTrainConfig":
        if self.workers.strategy == "fsdp":
            # The tokenizer (285M parameters with the paper preset) fits every GPU replicated; its two-stage
            # objective (autoencoder, then decoder + discriminator) is written for replicated parameters.
            raise ValueError("workers.strategy: the tokenizer trains with ddp (fsdp is for the world model)")
        return self


def paper() -> TokenizerTrainConfig:
    """Paper section 4: bf16 autocast and activation checkpointing, 24 x 448 x 960 clips through a
    285M-parameter autoencoder at one clip per H100."""
    return TokenizerTrainConfig(
        preset="paper",
        model=model_presets.paper(),
        optim=OptimConfig(lr=1e-4, final_lr=1e-5, schedule="warmup_cooldown", warmup_steps=2500, cooldown_steps=5000,
                          betas=(0.9, 0.95), weight_decay=0.1, grad_clip=1.0, ema_decay=0.9999),
        gan=GanConfig(steps=20000, weight=0.1, disc_lr=1e-5, lr=1e-5, discriminator=disc_presets.paper()),
        data=DataConfig(batch_size=1, shuffle_buffer=64, val_samples=64, read_cpus=0.5, read_batch=4),
        schedule=TokenizerSchedule(steps=300000, log_every=100, val_every=5000, checkpoint_every=1000,
                                   keep_checkpoints=3, preview_clips=4),
        workers=WorkersConfig(num_workers=128, use_gpu=True, cpus_per_worker=8, max_failures=3, strategy="ddp",
                              activation_checkpointing=True),
        precision="bf16",
    )


def tiny() -> TokenizerTrainConfig:
    """The paper's losses and stages at CPU size; a larger learning rate and a shorter EMA horizon, which a
    run of a few hundred steps needs."""
    return derived(
        paper(), preset="tiny", model=model_presets.tiny(), precision="fp32",
        optim={"lr": 1e-3, "final_lr": 1e-4, "warmup_steps": 20, "cooldown_steps": 100, "ema_decay": 0.99},
        gan={"steps": 20, "lr": 1e-4, "discriminator": disc_presets.tiny()},
        data={"batch_size": 8, "shuffle_buffer": 32, "val_samples": 24},
        schedule={"steps": 300, "log_every": 10, "val_every": 100, "checkpoint_every": 50, "keep_checkpoints": 2},
        workers={"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1, "max_failures": 2,
                 "activation_checkpointing": False},
    )


PRESETS = {"paper": paper, "tiny": tiny}


def train_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                 path: str | None = None) -> TokenizerTrainConfig:
    """Preset -> YAML file -> overrides; raises ``ConfigError`` naming each bad field.

    ``model`` overrides apply on top of the preset's model (``model: {frames: 16}``), and the model's
    own validation (frame count a multiple of the temporal factor, resolution divisible by the
    spatial factor) reports as ``model.<field>``.
    """
    return build_config(TokenizerTrainConfig, PRESETS, preset=preset, overrides=overrides, path=path)


def check_pretrained(cfg: TokenizerTrainConfig) -> None:
    """Fail before any work when a pretrained network a non-zero loss weight needs is not on disk."""
    loss = cfg.loss
    if loss.dino > 0:
        path = loss.dino_path or ""
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"loss.dino_path: {path!r} is not a DINOv2 directory (no config.json); "
                              f"the dino loss weight is {loss.dino}")
    if loss.lpips > 0:
        file = lpips_backbone_cache_path(loss.lpips_net, loss.lpips_torch_home)
        if not file.is_file():
            raise ConfigError(f"loss.lpips_torch_home: the LPIPS {loss.lpips_net} backbone is not cached at {file} "
                              f"(the lpips loss weight is {loss.lpips}; nothing is downloaded)")
