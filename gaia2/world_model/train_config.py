"""Configuration of world-model training (paper section 4): presets ``paper`` and ``tiny``.

``paper``: 460,000 steps at batch 256 (one sample per H100, 256 workers, FSDP, bf16, activation
checkpointing), AdamW lr 5e-5 after 2,500 warm-up steps, cosine to 6.5e-6, betas (0.9, 0.99), weight
decay 0.1, clipping 1.0, EMA 0.9999; tau from the bimodal logit-normal; tasks 70 / 20 / 10.

``tiny``: the same objective on one CPU worker for a few hundred steps; like the tokenizer's tiny
preset it has a larger learning rate and a shorter EMA horizon, which a short run needs.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field, field_validator, model_validator

from gaia2.config.base import StrictModel, build_config, derived
from gaia2.config.training import DataConfig, OptimConfig, ScheduleConfig, TrainConfig, WorkersConfig
from gaia2.world_model import config as model_presets
from gaia2.world_model.config import WorldModelConfig

# The paper's latent statistics (§4: "as empirically determined during tokenizer training"): its tokenizer's.
PAPER_LATENT_MEAN, PAPER_LATENT_STD = 0.0, 0.32


class FlowConfig(StrictModel):
    """Flow matching: the bimodal logit-normal tau mixture, the task mix, and the latent normalisation.

    ``latent_mean`` / ``latent_std``: the tokenizer's latent statistics, scalars or one value per latent
    channel. ``None`` (the tiny preset's default) means "measured": the training job takes them from the
    latent shards' ``latent_stats.json`` (``gaia2 encode-latents`` / ``gaia2 latents stats`` write it) and
    refuses explicit values that differ from it. The paper preset's 0 / 0.32 are the paper's tokenizer's
    (paper §4) and fit no other tokenizer.
    """
    tau_weights: tuple[float, float]
    tau_means: tuple[float, float]
    tau_stds: tuple[float, float]
    p_scratch: float = Field(ge=0, le=1, description="generate every latent from noise")
    p_context: float = Field(ge=0, le=1, description="keep the first context latents clean")
    p_inpaint: float = Field(ge=0, le=1, description="regenerate a spatio-temporal rectangle")
    latent_mean: float | list[float] | None = Field(
        None, description="latent mean, scalar or per channel; null: measured (the latent shards' latent_stats.json)")
    latent_std: float | list[float] | None = Field(
        None, description="latent standard deviation, scalar or per channel; null: measured, like latent_mean")
    moving_inpaint: float = Field(0.5, ge=0, le=1, description="share of inpainting masks that drift over time "
                                                              "(the rest are fixed rectangles)")

    @model_validator(mode="after")
    def _check(self) -> "FlowConfig":
        total = self.p_scratch + self.p_context + self.p_inpaint
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"p_scratch + p_context + p_inpaint: must sum to 1, got {total}")
        if (self.latent_mean is None) != (self.latent_std is None):
            raise ValueError("latent_mean and latent_std: give both, or neither (null: measured)")
        std = self.latent_std if isinstance(self.latent_std, list) else [self.latent_std]
        if self.latent_std is not None and not all(s > 0 for s in std):
            raise ValueError(f"latent_std: every value must be > 0, got {self.latent_std}")
        if isinstance(self.latent_mean, list) and isinstance(self.latent_std, list) \
                and len(self.latent_mean) != len(self.latent_std):
            raise ValueError(f"latent_mean and latent_std: {len(self.latent_mean)} and {len(self.latent_std)} "
                             f"channels")
        return self

    @property
    def measured(self) -> bool:
        """Whether the statistics are still to be taken from the latent shards."""
        return self.latent_mean is None


def paper_flow() -> FlowConfig:
    """Paper section 4: tau ~ 0.8 logit-N(0.5, 1.4) + 0.2 logit-N(-3, 1); tasks 70 / 20 / 10; latents
    normalised with (0, 0.32), the statistics of the paper's tokenizer (and of no other: a world model
    trained on another tokenizer's latents sets them to null, measured). The tiny preset trains the same
    objective with measured statistics."""
    return FlowConfig(tau_weights=(0.8, 0.2), tau_means=(0.5, -3.0), tau_stds=(1.4, 1.0),
                      p_scratch=0.7, p_context=0.2, p_inpaint=0.1, latent_mean=PAPER_LATENT_MEAN,
                      latent_std=PAPER_LATENT_STD)


class WorldModelDataConfig(DataConfig):
    scenario: str | None = Field(
        None, description="scenario embeddings: a Parquet file of (key, embedding) rows from any driving model, "
                          "joined to the samples by key (samples without a row train as scenario-dropped)")


class LightEvalConfig(StrictModel):
    """The training job's light evaluation (``jobs/light_eval.py``): every ``every_steps`` steps and at the last
    one, the EMA model regenerates the first ``samples`` validation samples from scratch under their own recorded
    conditioning, the tokenizer decodes them, and the Fréchet DINOv2 distance (FDD) to the same samples' real
    frames is logged beside the losses (``eval_fdd``, with a bootstrap interval over samples when there are 8 or
    more). A few samples give a noisy, upward-biased figure: a trend within one run, not the evaluation job's
    number (``gaia2 evaluate``)."""
    every_steps: int = Field(0, ge=0, description="evaluate every this many steps and at the last step (0: never)")
    samples: int = Field(4, ge=1, description="validation samples generated: the first keys (sorted) of the latent "
                                              "shards' val split")
    tokenizer: str | None = Field(None, description="the tokenizer whose latents the model trains on (it decodes the "
                                                    "generations): an export directory or an MLflow models:/ URI")
    shards: str | None = Field(None, description="the pixel shards the latent shards were encoded from (the real "
                                                 "frames)")
    fdd: str | None = Field(None, description="DINOv2 directory (transformers save_pretrained), a local path")
    resolution: list[int] | None = Field(None, description="[H, W] the frames are resized to for DINOv2, multiples of "
                                                           "its patch size (null: 448 x 952, the paper's)")
    sampler_steps: int = Field(10, ge=1, description="Euler steps per generation")
    frames_per_video: int = Field(4, ge=1, description="frames per camera (spread evenly) measured on each side")
    batch_size: int = Field(4, ge=1, description="samples generated at once")
    seed: int = Field(0, ge=0, description="sampler seeds (a hash of seed and key per sample) and the bootstrap")

    @field_validator("resolution")
    @classmethod
    def _size(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise ValueError(f"expected [H, W] of positive ints, got {value}")
        return value


# What each light-evaluation input is, for the error when it is missing.
LIGHT_EVAL_INPUTS = {"tokenizer": "the tokenizer whose latents the model trains on, to decode the generations",
                     "shards": "the pixel shards the latent shards were encoded from, the real frames",
                     "fdd": "a DINOv2 directory (transformers save_pretrained)"}


class WorldModelTrainConfig(TrainConfig):
    model: WorldModelConfig
    flow: FlowConfig
    data: WorldModelDataConfig
    eval: LightEvalConfig = Field(default_factory=LightEvalConfig)

    @model_validator(mode="after")
    def _check_channels(self) -> "WorldModelTrainConfig":
        for name in ("latent_mean", "latent_std"):
            value = getattr(self.flow, name)
            if isinstance(value, list) and len(value) != self.model.latent_dim:
                raise ValueError(f"flow.{name}: {len(value)} channels, the model's latents have "
                                 f"model.latent_dim = {self.model.latent_dim}")
        return self

    @model_validator(mode="after")
    def _check_light_eval(self) -> "WorldModelTrainConfig":
        if self.eval.every_steps > 0:
            for name, what in LIGHT_EVAL_INPUTS.items():
                if not getattr(self.eval, name):
                    raise ValueError(f"eval.{name}: required when eval.every_steps > 0 ({what})")
        return self


def paper() -> WorldModelTrainConfig:
    return WorldModelTrainConfig(
        preset="paper",
        model=model_presets.paper(),
        optim=OptimConfig(lr=5e-5, final_lr=6.5e-6, schedule="warmup_cosine", warmup_steps=2500, betas=(0.9, 0.99),
                          weight_decay=0.1, grad_clip=1.0, ema_decay=0.9999),
        flow=paper_flow(),
        data=WorldModelDataConfig(batch_size=1, shuffle_buffer=64, val_samples=64, read_cpus=0.5, read_batch=8),
        schedule=ScheduleConfig(steps=460000, log_every=100, val_every=5000, checkpoint_every=1000, keep_checkpoints=3),
        workers=WorkersConfig(num_workers=256, use_gpu=True, cpus_per_worker=8, max_failures=3, strategy="fsdp",
                              activation_checkpointing=True),
        precision="bf16",
    )


def tiny() -> WorldModelTrainConfig:
    """The paper's objective on one CPU worker for a few hundred steps, with a larger learning rate and a
    shorter EMA horizon, which a short run needs."""
    return derived(
        paper(), preset="tiny", model=model_presets.tiny(), precision="fp32",
        flow={"latent_mean": None, "latent_std": None},
        optim={"lr": 2e-3, "final_lr": 2e-4, "warmup_steps": 20, "ema_decay": 0.99},
        data={"batch_size": 8, "shuffle_buffer": 32, "val_samples": 32},
        schedule={"steps": 300, "log_every": 10, "val_every": 100, "checkpoint_every": 50, "keep_checkpoints": 2},
        workers={"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1, "max_failures": 2, "strategy": "ddp",
                 "activation_checkpointing": False},
    )


PRESETS = {"paper": paper, "tiny": tiny}


def train_config(preset: str | None = None, overrides: Mapping[str, Any] | None = None,
                 path: str | None = None) -> WorldModelTrainConfig:
    return build_config(WorldModelTrainConfig, PRESETS, preset=preset, overrides=overrides, path=path)
