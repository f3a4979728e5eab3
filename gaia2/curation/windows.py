"""Cutting a clip into fixed-length windows on a common frame grid.

Cameras of one rig do not share exact timestamps (each has its own trigger offset) and rigs run at
20, 25 or 30 Hz. A window is defined on a frame grid: by default the clip's native rate, starting
when every camera has started and ending when the first camera stops. Each camera is resampled onto
the grid by taking its frame nearest in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaia2.schema.clip import Clip


@dataclass(frozen=True)
class Window:
    index: int                    # window number within the clip
    start: int                    # first grid index
    timestamps: np.ndarray        # (T,) grid times on the drive clock
    frame_indices: np.ndarray     # (N_cameras, T) source frame of each camera for each grid time

    @property
    def start_time(self) -> float:
        return float(self.timestamps[0])

    @property
    def end_time(self) -> float:
        return float(self.timestamps[-1])


def frame_grid(clip: Clip, grid_hz: float | None = None) -> np.ndarray:
    """(G,) grid times covered by every camera of the clip."""
    rate = grid_hz or max(c.frame_rate for c in clip.cameras)
    t0 = max(float(c.timestamps[0]) for c in clip.cameras)
    t1 = min(float(c.timestamps[-1]) for c in clip.cameras)
    if t1 < t0:
        return np.zeros(0)
    n = int(np.floor((t1 - t0) * rate + 1e-6)) + 1
    return t0 + np.arange(n) / rate


def nearest_frames(timestamps: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For each grid time, the index of the nearest timestamp (ties go to the earlier frame)."""
    right = np.clip(np.searchsorted(timestamps, grid), 1, len(timestamps) - 1)
    left = right - 1
    take_left = (grid - timestamps[left]) <= (timestamps[right] - grid)
    return np.where(take_left, left, right) if len(timestamps) > 1 else np.zeros(len(grid), dtype=np.int64)


def cut_windows(clip: Clip, frames: int, hop: int, grid_hz: float | None = None) -> list[Window]:
    """Every window of ``frames`` grid steps, starting every ``hop`` steps, fully inside the clip."""
    grid = frame_grid(clip, grid_hz)
    if len(grid) < frames:
        return []
    index = np.stack([nearest_frames(c.timestamps, grid) for c in clip.cameras])   # (N, G)
    starts = range(0, len(grid) - frames + 1, hop)
    return [Window(i, s, grid[s:s + frames], index[:, s:s + frames]) for i, s in enumerate(starts)]


def window_key(clip_id: str, index: int) -> str:
    """WebDataset sample key: no dots (the extension separator), unique across clips."""
    return f"{clip_id}_w{index:03d}"
