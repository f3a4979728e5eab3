"""A trained world model on disk: the ``gaia2.export`` format ``gaia2-world-model`` (``config.json`` with the
WorldModelConfig + ``model.safetensors``), what training exports (the EMA weights), MLflow registers, and
generation loads."""

from __future__ import annotations

from typing import Any

import torch

from gaia2.export import load_pretrained, save_pretrained
from gaia2.world_model.model import WorldModel

FORMAT = "gaia2-world-model"


def save_world_model(path: str, model: WorldModel, extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` (its config and weights, as float32) to directory ``path``; returns ``path``."""
    return save_pretrained(path, model, FORMAT, extra)


def load_world_model(path: str, device: str | torch.device = "cpu") -> WorldModel:
    """Load a directory written by ``save_world_model``; eval mode, no gradients."""
    return load_pretrained(path, device, FORMAT)
