"""GAIA-2 video tokenizer (paper section 2.1): space-time factorised transformer autoencoder with
Gaussian latents; 8 frames -> 1 latent, 32x spatial down-sampling in the ``paper`` preset."""

from gaia2.tokenizer.config import TokenizerConfig, paper, tiny, tokenizer_config
from gaia2.tokenizer.discriminator import (Discriminator3D, DiscriminatorConfig, discriminator_loss,
                                           generator_adversarial_loss)
from gaia2.tokenizer.losses import LossWeights, TokenizerLoss, kl_divergence
from gaia2.tokenizer.model import Tokenizer, describe, rolling_windows

__all__ = ["Discriminator3D", "DiscriminatorConfig", "LossWeights", "Tokenizer", "TokenizerConfig", "TokenizerLoss",
           "describe", "discriminator_loss", "generator_adversarial_loss", "kl_divergence", "paper", "rolling_windows",
           "tiny", "tokenizer_config"]
