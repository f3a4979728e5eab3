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
from typing import Any, Literal, Mapping

from pydantic import Field, model_validator

from gaia2.config.base import ConfigError, StrictModel, build_config
from gaia2.tokenizer import config as model_presets
from gaia2.tokenizer import discriminator as disc_presets
from gaia2.tokenizer.config import TokenizerConfig
from gaia2.tokenizer.discriminator import DISCRIMINATOR_LR, GAN_WEIGHT, DiscriminatorConfig
from gaia2.tokenizer.losses import LossWeights, lpips_backbone_cache_path


class OptimConfig(StrictModel):
    lr: float = Field(1e-4, gt=0, description="base learning rate after warm-up")
    final_lr: float = Field(1e-5, ge=0, description="learning rate at the end of the cool-down")
    warmup_steps: int = Field(2500, ge=0)
    cooldown_steps: int = Field(5000, ge=0, description="linear cool-down over the last steps of the main stage")
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float = Field(0.9999, ge=0, lt=1)


class GanConfig(StrictModel):
    """Decoder fine-tune after the main stage: encoder frozen, reconstruction losses + weight x adversarial."""
    steps: int = Field(20000, ge=0, description="fine-tune steps after the main stage (0 = none)")
    weight: float = Field(GAN_WEIGHT, ge=0)
    disc_lr: float = Field(DISCRIMINATOR_LR, gt=0, description="discriminator learning rate (constant)")
    lr: float = Field(1e-5, gt=0, description="decoder learning rate during the fine-tune (constant; the "
                                              "main stage ends at optim.final_lr)")
    discriminator: DiscriminatorConfig = Field(default_factory=disc_presets.paper)


class DataConfig(StrictModel):
    shards: str | None = Field(None, description="shard build directory (train/ and val/ WebDataset shards)")
    batch_size: int = Field(1, ge=1, description="clips per worker and step (global batch = workers x this)")
    shuffle_buffer: int = Field(64, ge=0, description="rows in each worker's local shuffle buffer (0 = none)")
    val_clips: int = Field(64, ge=1, description="validation clips evaluated (the first ones of the val split)")
    decode_cpus: float = Field(0.5, gt=0, description="logical CPUs per Ray Data decode task")
    decode_batch: int = Field(4, ge=1, description="samples per decode task call")


class ScheduleConfig(StrictModel):
    steps: int = Field(300000, ge=1, description="main-stage steps (all losses, encoder and decoder)")
    log_every: int = Field(100, ge=1)
    val_every: int = Field(5000, ge=1, description="validation (EMA model) every this many steps and at the end")
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    preview_clips: int = Field(4, ge=0, description="validation clips in the reconstruction video artifact")


class WorkersConfig(StrictModel):
    num_workers: int = Field(128, ge=1)
    use_gpu: bool = True
    cpus_per_worker: float = Field(8, gt=0)
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker; null = its CPUs")
    max_failures: int = Field(3, ge=-1, description="worker failures survived (restart from the last checkpoint)")


class TokenizerTrainConfig(StrictModel):
    preset: str = "tiny"
    seed: int = 0
    model: TokenizerConfig = Field(default_factory=model_presets.tiny)
    # The paper's weights, unvalidated here: DINO needs a local path, which a preset cannot know, so a
    # config without one fails when it is built (build_config validates everything) naming loss.dino_path.
    loss: LossWeights = Field(default_factory=LossWeights.model_construct)
    optim: OptimConfig = OptimConfig()
    gan: GanConfig = GanConfig()
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    workers: WorkersConfig = WorkersConfig()
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast on GPUs (CPU runs stay fp32)")

    @property
    def total_steps(self) -> int:
        return self.schedule.steps + self.gan.steps

    @model_validator(mode="after")
    def _check(self) -> "TokenizerTrainConfig":
        if self.optim.final_lr > self.optim.lr:
            raise ValueError(f"optim.final_lr: {self.optim.final_lr} is above optim.lr {self.optim.lr}")
        return self


def paper() -> TokenizerTrainConfig:
    # bf16 autocast and activation checkpointing: 24 x 448 x 960 clips through a 285M-parameter
    # autoencoder at one clip per H100.
    model = model_presets.paper().model_copy(update={"checkpoint_activations": True})
    return TokenizerTrainConfig(preset="paper", model=model, precision="bf16")


def tiny() -> TokenizerTrainConfig:
    return TokenizerTrainConfig(
        preset="tiny",
        model=model_presets.tiny(),
        optim=OptimConfig(lr=1e-3, final_lr=1e-4, warmup_steps=20, cooldown_steps=100, ema_decay=0.99),
        gan=GanConfig(steps=20, lr=1e-4, discriminator=disc_presets.tiny()),
        data=DataConfig(batch_size=8, shuffle_buffer=32, val_clips=24, decode_cpus=0.5, decode_batch=4),
        schedule=ScheduleConfig(steps=300, log_every=10, val_every=100, checkpoint_every=50, keep_checkpoints=2,
                                preview_clips=4),
        workers=WorkersConfig(num_workers=1, use_gpu=False, cpus_per_worker=1, torch_threads=None, max_failures=2),
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
