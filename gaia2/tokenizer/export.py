"""A trained tokenizer on disk: the ``gaia2.export`` format ``gaia2-tokenizer`` (``config.json`` with the
TokenizerConfig + ``model.safetensors``).

This is what training exports (the EMA weights), what MLflow registers, and what the latent-encoding
job and the world model load.
"""

from __future__ import annotations

from typing import Any

import torch

from gaia2.export import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, load_pretrained, read_meta, save_pretrained
from gaia2.tokenizer.model import Tokenizer

FORMAT = "gaia2-tokenizer"
__all__ = ["CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "load_tokenizer", "read_tokenizer_meta",
           "save_tokenizer"]


def save_tokenizer(path: str, model: Tokenizer, extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` (its config and weights, as float32) to directory ``path``; returns ``path``."""
    return save_pretrained(path, model, FORMAT, extra)


def read_tokenizer_meta(path: str) -> dict[str, Any]:
    """The checked config.json of a ``save_tokenizer`` directory (its TokenizerConfig under ``config``)."""
    return read_meta(path, FORMAT)


def load_tokenizer(path: str, device: str | torch.device = "cpu") -> Tokenizer:
    """Load a tokenizer written by ``save_tokenizer``; eval mode, no gradients."""
    return load_pretrained(path, device, FORMAT)
