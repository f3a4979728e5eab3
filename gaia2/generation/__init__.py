"""Generation with the GAIA-2 world model (paper §5): a spec a person writes -> the model's inputs exactly as
training saw them -> the windowed Euler sampler with guidance -> decoded multi-camera video. Pure PyTorch.

    spec.py       the typed generation spec (rig, duration, action, agents, metadata, CLIP, mode, sampler, guidance)
    sources.py    what a spec's references open (shard samples, latents files, previous generations, images)
    rig.py        rigs -> calibrated cameras at the generated size, mosaic layout
    timing.py     each camera's timestamps at the latent rate;  actions.py  named speed / curvature profiles
    agents.py     spec agents -> agent features (the shard pipeline's projection), boxes -> latent cells
    inputs.py     spec -> Request (every sampler input over the whole output)
    guidance.py   classifier-free guidance as one 2B forward pass;  sampler.py  windows, modes, batches
    video.py      latents -> per-camera and mosaic mp4;  generator.py  models + all of the above
"""

from gaia2.generation.actions import CURVATURE_PROFILES, SPEED_PROFILES, curvature_profile, speed_profile
from gaia2.generation.generator import Generator, Result
from gaia2.generation.inputs import Request
from gaia2.generation.sources import LatentShards, LocalSources, Sources
from gaia2.generation.spec import GenerationSpec, SpecError, load_spec, parse_spec, spec_for_sample
from gaia2.generation.timing import frame_times, latent_timestamps

__all__ = ["CURVATURE_PROFILES", "SPEED_PROFILES", "GenerationSpec", "Generator", "LatentShards", "LocalSources",
           "Request", "Result", "SpecError", "Sources", "curvature_profile", "frame_times", "latent_timestamps",
           "load_spec", "parse_spec", "spec_for_sample", "speed_profile"]
