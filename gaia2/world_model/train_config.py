"""Configuration of world-model training (paper section 4): presets ``paper`` and ``tiny``.

``paper``: 460,000 steps at batch 256 (one sample per H100, 256 workers, FSDP, bf16, activation
checkpointing), AdamW lr 5e-5 after 2,500 warm-up steps, cosine to 6.5e-6, betas (0.9, 0.99), weight
decay 0.1, clipping 1.0, EMA 0.9999; tau from the bimodal logit-normal; tasks 70 / 20 / 10.

``tiny``: the same objective on one CPU worker for a few hundred steps; like the tokenizer's tiny
preset it has a larger learning rate and a shorter EMA horizon, which a short run needs.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field, model_validator

from gaia2.config.base import StrictModel, build_config
from gaia2.world_model import config as model_presets
from gaia2.world_model.config import WorldModelConfig


class OptimConfig(StrictModel):
    lr: float = Field(5e-5, gt=0)
    final_lr: float = Field(6.5e-6, ge=0, description="end of the cosine decay")
    warmup_steps: int = Field(2500, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.9999, ge=0, lt=1)


class FlowConfig(StrictModel):
    tau_weights: tuple[float, float] = (0.8, 0.2)
    tau_means: tuple[float, float] = (0.5, -3.0)
    tau_stds: tuple[float, float] = (1.4, 1.0)
    p_scratch: float = Field(0.7, ge=0, le=1)
    p_context: float = Field(0.2, ge=0, le=1)
    p_inpaint: float = Field(0.1, ge=0, le=1)
    latent_mean: float = 0.0
    latent_std: float = Field(0.32, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "FlowConfig":
        total = self.p_scratch + self.p_context + self.p_inpaint
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"p_scratch + p_context + p_inpaint: must sum to 1, got {total}")
        return self


class DataConfig(StrictModel):
    shards: str | None = Field(None, description="latent shard directory (train/ and val/), from encode-latents")
    batch_size: int = Field(1, ge=1, description="samples per worker and step")
    shuffle_buffer: int = Field(64, ge=0)
    val_samples: int = Field(64, ge=1)
    read_cpus: float = Field(0.5, gt=0, description="logical CPUs per Ray Data read/convert task")


class ScheduleConfig(StrictModel):
    steps: int = Field(460000, ge=1)
    log_every: int = Field(100, ge=1)
    val_every: int = Field(5000, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)


class WorkersConfig(StrictModel):
    num_workers: int = Field(256, ge=1)
    use_gpu: bool = True
    cpus_per_worker: float = Field(8, gt=0)
    torch_threads: int | None = Field(None, ge=1)
    max_failures: int = Field(3, ge=-1)
    strategy: Literal["ddp", "fsdp"] = Field("fsdp", description="ddp: replicated model (small presets); "
                                                               "fsdp: FSDP2 fully_shard per block (large ones)")


class WorldModelTrainConfig(StrictModel):
    preset: str = "tiny"
    seed: int = 0
    model: WorldModelConfig = Field(default_factory=model_presets.tiny)
    optim: OptimConfig = OptimConfig()
    flow: FlowConfig = FlowConfig()
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    workers: WorkersConfig = WorkersConfig()
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast / FSDP mixed precision on GPUs")

    @property
    def total_steps(self) -> int:
        return self.schedule.steps


def paper() -> WorldModelTrainConfig:
    return WorldModelTrainConfig(preset="paper", model=model_presets.paper(), precision="bf16")


def tiny() -> WorldModelTrainConfig:
    return WorldModelTrainConfig(
        preset="tiny",
        model=model_presets.tiny(),
        optim=OptimConfig(lr=1e-3, final_lr=1e-4, warmup_steps=20, ema_decay=0.99),
        data=DataConfig(batch_size=8, shuffle_buffer=32, val_samples=32, read_cpus=0.5),
        schedule=ScheduleConfig(steps=300, log_every=10, val_every=100, checkpoint_every=50, keep_checkpoints=2),
        workers=WorkersConfig(num_workers=1, use_gpu=False, cpus_per_worker=1, max_failures=2, strategy="ddp"),
    )


PRESETS = {"paper": paper, "tiny": tiny}


def train_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                 path: str | None = None) -> WorldModelTrainConfig:
    return build_config(WorldModelTrainConfig, PRESETS, preset=preset, overrides=overrides, path=path)
