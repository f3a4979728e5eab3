"""A trained tokenizer on disk: ``config.json`` (the TokenizerConfig) + ``model.safetensors`` (weights).

This is what training exports (the EMA weights), what MLflow registers, and what the latent-encoding
job and the world model load. ``load_tokenizer`` checks the format and that every weight is there.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from gaia2.tokenizer.config import TokenizerConfig
from gaia2.tokenizer.model import Tokenizer

FORMAT = "gaia2-tokenizer"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_tokenizer(path: str, model: Tokenizer, extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` (its config and weights, as float32) to directory ``path``; returns ``path``."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(path, WEIGHTS_FILE))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.model_dump(mode="json"),
            **(extra or {})}
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    return path


def read_tokenizer_meta(path: str) -> dict[str, Any]:
    cfg_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f"tokenizer {path!r}: no {CONFIG_FILE} (expected a directory written by save_tokenizer)")
    with open(cfg_file) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"tokenizer {path!r}: {CONFIG_FILE} is format {meta.get('format')!r} "
                         f"v{meta.get('format_version')}, expected {FORMAT!r} v{FORMAT_VERSION}")
    return meta


def load_tokenizer(path: str, device: str | torch.device = "cpu") -> Tokenizer:
    """Load a tokenizer written by ``save_tokenizer``; eval mode, no gradients."""
    from safetensors.torch import load_file

    meta = read_tokenizer_meta(path)
    cfg = TokenizerConfig.model_validate(meta["config"])
    weights = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"tokenizer {path!r}: no {WEIGHTS_FILE}")
    model = Tokenizer(cfg)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    if missing or unexpected:
        raise ValueError(f"tokenizer {path!r}: weights do not match the config "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model.to(device).eval().requires_grad_(False)
