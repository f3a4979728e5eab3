"""Side-by-side preview videos of tokenizer reconstructions: ground truth above reconstruction, one
column per clip, written as H.264 mp4 with the deterministic encoder of ``gaia2.video.encode``."""

from __future__ import annotations

import os

import numpy as np
from torch import Tensor

from gaia2.tokenizer.clips import to_uint8
from gaia2.video.encode import VideoCodec, encode_video, write_atomic

SEPARATOR_PX = 2
SEPARATOR_VALUE = 255   # white lines: they stay visible on dark driving scenes


def comparison_grid(video: Tensor, recon: Tensor, max_clips: int = 4) -> np.ndarray:
    """video, recon (B, 3, T, H, W) in [-1, 1] -> frames (T, 2H + 2, n W + 2 (n - 1), 3) uint8 RGB,
    n = min(B, max_clips): the first n clips side by side, ground truth in the top row and the
    reconstruction below, separated by 2-pixel white lines."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"comparison_grid: video must be (B, 3, T, H, W), got {tuple(video.shape)}")
    if video.shape != recon.shape:
        raise ValueError(f"comparison_grid: video {tuple(video.shape)} and recon {tuple(recon.shape)} differ")
    if max_clips < 1:
        raise ValueError(f"comparison_grid: max_clips must be >= 1, got {max_clips}")
    n = min(video.shape[0], max_clips)
    top, bottom = to_uint8(video[:n]), to_uint8(recon[:n])          # (n, T, H, W, 3) each
    _, t, h, w, _ = top.shape
    s = SEPARATOR_PX
    grid = np.full((t, 2 * h + s, n * w + s * (n - 1), 3), SEPARATOR_VALUE, dtype=np.uint8)
    for i in range(n):
        x0 = i * (w + s)
        grid[:, :h, x0:x0 + w] = top[i]
        grid[:, h + s:, x0:x0 + w] = bottom[i]
    return grid


def write_comparison(path: str | os.PathLike, video: Tensor, recon: Tensor, fps: float = 10.0,
                     max_clips: int = 4) -> str:
    """Write ``comparison_grid(video, recon, max_clips)`` to ``path`` as H.264 mp4; returns the path.

    yuv420p needs even frame sizes, so an odd width or height is padded by one separator-coloured
    pixel on the right or bottom. The file is written atomically, its directory created if needed.
    """
    if not fps > 0:
        raise ValueError(f"write_comparison: fps must be positive, got {fps}")
    grid = comparison_grid(video, recon, max_clips)
    _, h, w, _ = grid.shape
    grid = np.pad(grid, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=SEPARATOR_VALUE)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, encode_video(grid, fps, VideoCodec()))
    return path
