"""A trained model on disk, one format for every gaia2 model: a directory holding

    config.json        {"format": "gaia2-tokenizer" | "gaia2-world-model", "format_version": 1,
                        "config": the model's config (JSON), **extra (e.g. step, EMA decay, MLflow run id)}
    model.safetensors  the state dict, every tensor float32 on the CPU

This is what training exports (the EMA weights), what MLflow registers, and what the latent-encoding job,
the world model and generation load. Loading never unpickles anything: the config is JSON validated by the
model's config class and the weights are safetensors; a weight missing, extra or of the wrong shape is an
error naming the directory.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from gaia2.config.base import format_validation_error

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
RESERVED_KEYS = ("format", "format_version", "config")


@dataclass(frozen=True)
class ModelFormat:
    """Where a format's model and config classes live (imported lazily: this module imports no model)."""
    module: str      # e.g. "gaia2.tokenizer"
    model: str       # the nn.Module class, built from its config: ``Model(cfg)``, with the config at ``.cfg``
    config: str      # its pydantic config class
    noun: str        # what errors call it
    saver: str       # the function that writes it, named when a directory is not one of its kind

    def classes(self) -> tuple[type[nn.Module], Any]:
        module = importlib.import_module(self.module)
        return getattr(module, self.model), getattr(module, self.config)


FORMATS = {
    "gaia2-tokenizer": ModelFormat("gaia2.tokenizer", "Tokenizer", "TokenizerConfig", "tokenizer", "save_tokenizer"),
    "gaia2-world-model": ModelFormat("gaia2.world_model", "WorldModel", "WorldModelConfig", "world model",
                                     "save_world_model"),
}


def _format(name: str) -> ModelFormat:
    if name not in FORMATS:
        raise ValueError(f"export format {name!r} is not one of {sorted(FORMATS)}")
    return FORMATS[name]


def save_pretrained(path: str, model: nn.Module, format: str, extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` (its ``cfg`` and its weights as float32) to directory ``path`` in ``format``; returns
    ``path``. ``extra`` adds JSON-serialisable keys to config.json (not format, format_version or config)."""
    from safetensors.torch import save_file

    fmt = _format(format)
    model_cls, _ = fmt.classes()
    if not isinstance(model, model_cls):
        raise TypeError(f"save_pretrained: format {format!r} holds a {fmt.model}, got {type(model).__name__}")
    clash = sorted(set(extra or {}) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"save_pretrained: extra keys {clash} would overwrite the format's own keys")
    # Serialised before anything is written: an extra value JSON cannot hold leaves no half-written directory.
    meta = json.dumps({"format": format, "format_version": FORMAT_VERSION,
                       "config": model.cfg.model_dump(mode="json"), **(extra or {})}, indent=1, sort_keys=True)
    os.makedirs(path, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              os.path.join(path, WEIGHTS_FILE))
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        f.write(meta)
    return path


def read_meta(path: str, format: str | None = None) -> dict[str, Any]:
    """config.json of a ``save_pretrained`` directory, checked: a known format (``format`` when given) at
    ``FORMAT_VERSION`` with a ``config`` object. Raises FileNotFoundError / ValueError naming ``path``."""
    fmt = _format(format) if format is not None else None
    what, saver = (fmt.noun, fmt.saver) if fmt else ("model", "save_pretrained")
    cfg_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f"{what} {path!r}: no {CONFIG_FILE} (expected a directory written by {saver})")
    try:
        with open(cfg_file) as f:
            meta = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path!r}: {CONFIG_FILE} is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{what} {path!r}: {CONFIG_FILE} holds a {type(meta).__name__}, expected an object")
    found, version = meta.get("format"), meta.get("format_version")
    expected = [format] if format is not None else sorted(FORMATS)
    if found not in expected:
        raise ValueError(f"{what} {path!r}: {CONFIG_FILE} is format {found!r}, expected "
                         f"{' or '.join(map(repr, expected))}")
    if version != FORMAT_VERSION:
        raise ValueError(f"{what} {path!r}: {CONFIG_FILE} is {found!r} version {version!r}, this gaia2 reads "
                         f"version {FORMAT_VERSION}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{what} {path!r}: {CONFIG_FILE} has no 'config' object")
    return meta


def load_pretrained(path: str, device: str | torch.device = "cpu", format: str | None = None) -> nn.Module:
    """Build the model a ``save_pretrained`` directory holds (the class named by config.json's format; when
    ``format`` is given, only that one) and load its weights; eval mode, no gradients, on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_meta(path, format)
    fmt = FORMATS[meta["format"]]
    model_cls, config_cls = fmt.classes()
    try:
        cfg = config_cls.model_validate(meta["config"])
    except ValidationError as err:
        raise ValueError(f"{fmt.noun} {path!r}: {CONFIG_FILE} holds no valid {fmt.config}: "
                         f"{format_validation_error(err, 'config.')}") from None
    weights = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{fmt.noun} {path!r}: no {WEIGHTS_FILE}")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as err:   # e.g. a pickle renamed to .safetensors
        raise ValueError(f"{fmt.noun} {path!r}: {WEIGHTS_FILE} is not a safetensors file ({err})") from None
    model = model_cls(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
                    if k in expected and v.shape != expected[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"{fmt.noun} {path!r}: weights do not match the config (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {shapes[:5]})")
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)
