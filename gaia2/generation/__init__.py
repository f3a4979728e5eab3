"""Generation with the GAIA-2 world model (paper §5): what a request describes, turned into the model's
inputs exactly as training saw them. Pure PyTorch / numpy.

So far: ``timing`` (each camera's timestamps at the latent rate, from a rig's frame rate and trigger
offsets, computed the way the training samples are) and ``actions`` (named speed and curvature profiles).
"""

from gaia2.generation.actions import CURVATURE_PROFILES, SPEED_PROFILES, curvature_profile, speed_profile
from gaia2.generation.timing import frame_times, latent_timestamps

__all__ = ["CURVATURE_PROFILES", "SPEED_PROFILES", "curvature_profile", "frame_times", "latent_timestamps",
           "speed_profile"]
