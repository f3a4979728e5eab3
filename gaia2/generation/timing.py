"""Each camera's timestamps at the latent rate, for a generation request, computed as training computes them.

A training sample's timestamps (``gaia2.world_model.sample``) are, per camera, the mean of the frame times
of each latent's ``temporal_factor`` frames; the cameras of a rig are not synchronous (each has its own
trigger offset). A request gives a rig's frame rate and, optionally, the offsets; the same averaging
(``per_latent``) turns them into (T, N) seconds, so generation sees the timestamps training did.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gaia2.world_model.sample import per_latent


def frame_times(frame_rate: float, frames: int, offsets_s: Sequence[float], start_s: float = 0.0) -> np.ndarray:
    """(frames, N) seconds: frame f of camera n at start + f / rate + offset_n."""
    if not (np.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate: must be a positive number of frames per second, got {frame_rate}")
    if frames < 1:
        raise ValueError(f"frames: must be >= 1, got {frames}")
    offsets = np.asarray(offsets_s, np.float64)
    if offsets.ndim != 1 or len(offsets) == 0 or not np.isfinite(offsets).all():
        raise ValueError(f"offsets_s: one finite trigger offset (s) per camera, got {list(offsets_s)}")
    return start_s + np.arange(frames)[:, None] / frame_rate + offsets[None, :]


def latent_timestamps(frame_rate: float, latent_steps: int, temporal_factor: int, offsets_s: Sequence[float],
                      start_s: float = 0.0) -> np.ndarray:
    """(T, N) float32 seconds: per camera, the mean frame time of each latent's ``temporal_factor`` frames
    (as ``world_model_sample`` computes a training sample's); relative to ``start_s`` like a shard window's.
    The world model wants them relative to the present (``gaia2.world_model.trainer.present_relative``)."""
    if latent_steps < 1 or temporal_factor < 1:
        raise ValueError(f"latent_steps and temporal_factor: must be >= 1, got {latent_steps}, {temporal_factor}")
    times = frame_times(frame_rate, latent_steps * temporal_factor, offsets_s, start_s)
    return per_latent(times, latent_steps).astype(np.float32)
