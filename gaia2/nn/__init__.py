"""Layers shared by the tokenizer and the world model: sinusoidal encodings and the transformer MLP."""

from gaia2.nn.mlp import MLP
from gaia2.nn.sinusoid import sincos_2d, sincos_3d, sinusoidal

__all__ = ["MLP", "sincos_2d", "sincos_3d", "sinusoidal"]
