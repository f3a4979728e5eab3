"""A trained world model on disk: ``config.json`` (the WorldModelConfig) + ``model.safetensors`` (weights),
what training exports (the EMA weights), MLflow registers, and generation loads."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from gaia2.world_model.config import WorldModelConfig
from gaia2.world_model.model import WorldModel

FORMAT, FORMAT_VERSION = "gaia2-world-model", 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_world_model(path: str, model: WorldModel, extra: dict[str, Any] | None = None) -> str:
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              os.path.join(path, WEIGHTS_FILE))
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump({"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.model_dump(mode="json"),
                   **(extra or {})}, f, indent=1, sort_keys=True)
    return path


def load_world_model(path: str, device: str | torch.device = "cpu") -> WorldModel:
    """Load a directory written by ``save_world_model``; eval mode, no gradients."""
    from safetensors.torch import load_file

    cfg_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f"world model {path!r}: no {CONFIG_FILE} (expected a save_world_model directory)")
    with open(cfg_file) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"world model {path!r}: {CONFIG_FILE} is format {meta.get('format')!r} "
                         f"v{meta.get('format_version')}, expected {FORMAT!r} v{FORMAT_VERSION}")
    model = WorldModel(WorldModelConfig.model_validate(meta["config"]))
    missing, unexpected = model.load_state_dict(load_file(os.path.join(path, WEIGHTS_FILE)), strict=False)
    if missing or unexpected:
        raise ValueError(f"world model {path!r}: weights do not match the config "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model.to(device).eval().requires_grad_(False)
