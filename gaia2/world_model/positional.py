"""Positional encodings of the world model (paper section 2.2.1), added at every block's input:

- spatial token position: fixed 2-D sinusoids over the latent grid (row in the first C/2 channels,
  column in the last C/2), the same for every camera and time step;
- timestamp: seconds relative to the present, per latent step and camera (a rig's cameras are not
  synchronous), scaled so that ``time_horizon_s`` maps to 1 and clamped to [-1, 1], then Fourier features
  (sin / cos of pi 2^k t) and an MLP;
- camera geometry: intrinsics (fx, fy, cx, cy divided by the image width / height), extrinsics (the
  top 3 rows of the 4x4 camera-to-ego matrix, translation in metres) and distortion (OpenCV k1 k2 p1 p2 k3),
  each through its own learned linear layer, summed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia2.nn import sincos_2d
from gaia2.world_model.config import WorldModelConfig


def normalise_timestamps(seconds: Tensor, horizon_s: float) -> Tensor:
    """Seconds relative to the present (B, T) -> [-1, 1] (``horizon_s`` seconds -> 1, clamped)."""
    return (seconds / horizon_s).clamp(-1.0, 1.0)


def fourier_features(t: Tensor, frequencies: int) -> Tensor:
    """t (...,) in [-1, 1] -> (..., 2 * frequencies): sin and cos of pi 2^k t, k = 0 .. frequencies - 1."""
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=t.device, dtype=torch.float32)
    angles = t.float()[..., None] * scales
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimestampEncoding(nn.Module):
    """Timestamps (B, T, ...) in seconds relative to the present -> (B, T, ..., C)."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc1 = nn.Linear(2 * cfg.time_frequencies, cfg.dim)
        self.fc2 = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, seconds: Tensor) -> Tensor:
        t = normalise_timestamps(seconds, self.cfg.time_horizon_s)
        feats = fourier_features(t, self.cfg.time_frequencies).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(feats)))


class CameraEncoding(nn.Module):
    """Camera geometry -> (B, N, C): intrinsics (B, N, 4) normalised, extrinsics (B, N, 4, 4), distortion (B, N, 5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.intrinsics = nn.Linear(4, dim)
        self.extrinsics = nn.Linear(12, dim)
        self.distortion = nn.Linear(5, dim)

    def forward(self, intrinsics: Tensor, extrinsics: Tensor, distortion: Tensor) -> Tensor:
        dtype = self.intrinsics.weight.dtype
        ext = extrinsics[..., :3, :].flatten(-2)   # rotation and translation rows; the last row is constant
        return (self.intrinsics(intrinsics.to(dtype)) + self.extrinsics(ext.to(dtype))
                + self.distortion(distortion.to(dtype)))


class PositionalEncoding(nn.Module):
    """All three encodings summed, broadcast to the token grid: (B, T, N, H, W, C)."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.timestamp = TimestampEncoding(cfg)
        self.camera = CameraEncoding(cfg.dim)

    def forward(self, seconds: Tensor, camera: dict[str, Tensor], height: int, width: int) -> Tensor:
        """seconds (B, T, N) per camera, or (B, T) shared by every camera."""
        time = self.timestamp(seconds)                                               # (B, T, N, C) or (B, T, C)
        if time.ndim == 3:
            time = time[:, :, None]
        cam = self.camera(camera["intrinsics"], camera["extrinsics"], camera["distortion"])   # (B, N, C)
        space = sincos_2d(height, width, self.cfg.dim, time.device).to(time.dtype)          # (H, W, C)
        return time[:, :, :, None, None] + cam[:, None, :, None, None] + space
