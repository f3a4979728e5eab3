"""GAIA-2 latent world model (paper section 2.2): a space-time factorised transformer over multi-camera
latents, trained with flow matching; conditioning encoders in ``gaia2.conditioning``, flow matching in
``gaia2.flow``."""

from gaia2.world_model.config import WorldModelConfig, paper, tiny, world_model_config
from gaia2.world_model.model import WorldModel

__all__ = ["WorldModel", "WorldModelConfig", "paper", "tiny", "world_model_config"]
