"""Latent normalisation (paper §2.2.4, §4): the world model sees (x - mean) / std so that the latents have
the magnitude of the unit Gaussian noise they are interpolated with. The statistics come from the training
config (``flow.latent_mean``, ``flow.latent_std``: 0 and 0.32 in the paper preset, measured on the paper's
tokenizer; a different tokenizer may need its own) and travel with the exported world model.
"""

from __future__ import annotations

from torch import Tensor

def _check_std(std: float) -> None:
    if not std > 0:
        raise ValueError(f"latent normalisation: std must be > 0 (got {std})")


def normalize(x: Tensor, mean: float, std: float) -> Tensor:
    """Tokenizer latents -> world-model latents: (x - mean) / std, any shape."""
    _check_std(std)
    return (x - mean) / std


def denormalize(x: Tensor, mean: float, std: float) -> Tensor:
    """World-model latents -> tokenizer latents (the inverse of ``normalize``): x * std + mean."""
    _check_std(std)
    return x * std + mean
