"""Optimisation helpers shared by the tokenizer and world-model jobs: schedules and EMA."""

from gaia2.optim.ema import EMA
from gaia2.optim.schedules import warmup_cooldown_lr, warmup_cosine_lr

__all__ = ["EMA", "warmup_cooldown_lr", "warmup_cosine_lr"]
