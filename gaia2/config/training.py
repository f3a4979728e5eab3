"""The sections every training config shares, defined once: optimiser, schedule, data, workers, job.

A model's training config (``gaia2.tokenizer.train_config``, ``gaia2.world_model.train_config``) is a
``TrainConfig`` plus its own ``model`` (and loss / flow / GAN) sections. The values, paper or tiny, live in
each model's presets: these classes hold the ranges and meanings, and only defaults that are not paper
numbers (log cadence, file locations).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from gaia2.config.base import StrictModel


class OptimConfig(StrictModel):
    """AdamW with weight decay on matrices and kernels only, global-norm clipping, parameter EMA, and one of
    the paper's two learning-rate shapes (``gaia2.optim.learning_rate``)."""
    lr: float = Field(gt=0, description="base learning rate after warm-up")
    final_lr: float = Field(ge=0, description="learning rate at the end of the schedule")
    schedule: Literal["warmup_cooldown", "warmup_cosine"] = Field(
        description="warmup_cooldown: linear warm-up, constant, linear cool-down over the last cooldown_steps "
                    "(tokenizer); warmup_cosine: linear warm-up, cosine to final_lr (world model)")
    warmup_steps: int = Field(ge=0)
    cooldown_steps: int = Field(0, ge=0, description="warmup_cooldown only: steps of the final linear cool-down")
    betas: tuple[float, float]
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0, description="max global gradient norm")
    ema_decay: float = Field(ge=0, lt=1, description="parameter EMA used for validation and export")

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of ``step`` of a schedule ``total`` steps long."""
        from gaia2.optim.schedules import warmup_cooldown_lr, warmup_cosine_lr

        if self.schedule == "warmup_cooldown":
            return warmup_cooldown_lr(step, total, self.lr, self.warmup_steps, self.cooldown_steps, self.final_lr)
        return warmup_cosine_lr(step, total, self.lr, self.warmup_steps, self.final_lr)

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.final_lr > self.lr:
            raise ValueError(f"final_lr: {self.final_lr} is above lr {self.lr}")
        return self


class ScheduleConfig(StrictModel):
    steps: int = Field(ge=1, description="optimiser steps (the tokenizer's main stage; its GAN steps come after)")
    log_every: int = Field(100, ge=1)
    val_every: int = Field(5000, ge=1, description="validation (EMA model) every this many steps and at the end")
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=2, description="checkpoints kept; the one before the latest is the "
                                                       "fallback when the latest is corrupt")


class DataConfig(StrictModel):
    shards: str | None = Field(None, description="the training data: a shard directory with train/ and val/")
    batch_size: int = Field(ge=1, description="rows per worker and step (global batch = workers x this)")
    shuffle_buffer: int = Field(ge=0, description="rows in each worker's local shuffle buffer (0 = none)")
    val_samples: int = Field(ge=1, description="validation rows evaluated (the first ones of the val split)")
    read_cpus: float = Field(0.5, gt=0, description="logical CPUs per Ray Data read / decode task")
    read_batch: int = Field(4, ge=1, description="samples per read / decode task call")
    weighted: bool = Field(True, description="draw each training epoch's samples in proportion to the manifest's "
                                             "weights (with replacement; validation stays unweighted)")


class WorkersConfig(StrictModel):
    num_workers: int = Field(ge=1, description="Ray Train workers")
    use_gpu: bool = Field(description="one GPU per worker")
    cpus_per_worker: float = Field(gt=0, description="logical CPUs per worker; on a local machine it is lowered "
                                                     "to leave the data pipeline room")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker; null = its CPUs")
    max_failures: int = Field(ge=-1, description="worker-group restarts survived (from the last checkpoint)")
    strategy: Literal["ddp", "fsdp"] = Field(description="ddp: replicated model; fsdp: FSDP2, parameters sharded "
                                                         "per transformer block")
    activation_checkpointing: bool = Field(False, description="recompute each transformer block in backward "
                                                              "(memory for compute)")


class TrainJobConfig(StrictModel):
    """Where a training job keeps its state; the name is the resume key."""
    name: str | None = Field(None, description="job name: checkpoints and the MLflow run are found by it "
                                               "(default <model>-<preset>)")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                         description="local MLflow database, artifacts and exports")
    storage: str | None = Field(None, description="checkpoint storage: a path or a URI (default <workdir>/ray_results)")
    fail_at_step: int | None = Field(None, ge=1, description="testing resume: crash rank 0 once at this step")


class TrainConfig(StrictModel):
    """What every trainable model's config has; subclasses add ``model`` and their objective's sections."""
    preset: str = "tiny"
    seed: int = 0
    optim: OptimConfig
    schedule: ScheduleConfig
    data: DataConfig
    workers: WorkersConfig
    precision: Literal["fp32", "bf16"] = Field(description="bf16 = autocast / FSDP mixed precision on GPUs "
                                                           "(CPU runs stay fp32)")
    job: TrainJobConfig = Field(default_factory=TrainJobConfig)

    @property
    def total_steps(self) -> int:
        return self.schedule.steps
