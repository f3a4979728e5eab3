"""Fréchet Video Motion Distance (Liu et al., 2024): how alike the motion of two sets of videos is.

    d = fvmd(real_videos, fake_videos)          # each a list of (T, H, W, 3) uint8 clips of >= 16 frames
    d.tracker                                   # "lucas-kanade": figures are comparable only for one tracker

As the paper defines it: keypoints on a regular grid are tracked over 16 frames; their velocity (first
difference of the tracks) and acceleration (second difference) fields are summarised per spatial cell by
histograms of motion direction (8 bins, weighted by magnitude) and of magnitude (log-spaced bins), pooled over
the clip; the per-video feature vectors of the two sets are compared by the Fréchet distance
(``gaia2.evaluation.frechet``). The tracker is pluggable (anything with ``name`` and ``__call__(frames) ->
(tracks (T, K, 2), valid (T, K))``): by default pyramidal Lucas-Kanade (OpenCV), which needs no weights; a learned
point tracker loaded from a local path can stand in its place (``TorchScriptTracker``, called as CoTracker is;
``load_tracker`` picks either), and its name goes into the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaia2.evaluation.frechet import Distance, frechet

CLIP_FRAMES = 16
ANGLE_BINS = 8
MAGNITUDE_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, np.inf)   # pixels per frame (per frame^2 for acceleration)


def grid_points(h: int, w: int, grid: int) -> np.ndarray:
    """A ``grid`` x ``grid`` lattice over the central 80 % of an h x w frame -> (grid * grid, 2) float32 [x, y],
    row by row."""
    ys = np.linspace(0.1 * h, 0.9 * h, grid)
    xs = np.linspace(0.1 * w, 0.9 * w, grid)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)


class LucasKanade:
    """Pyramidal Lucas-Kanade tracking of a ``grid`` x ``grid`` lattice of points, frame to frame."""
    name = "lucas-kanade"

    def __init__(self, grid: int = 16, window: int = 15, levels: int = 3) -> None:
        self.grid, self.window, self.levels = grid, window, levels

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        t, h, w = frames.shape[:3]
        pts = grid_points(h, w, self.grid)[:, None]                # (K, 1, 2), as OpenCV takes them
        tracks = np.zeros((t, len(pts), 2), np.float32)
        valid = np.ones((t, len(pts)), bool)
        tracks[0] = pts[:, 0]
        gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
        params = dict(winSize=(self.window, self.window), maxLevel=self.levels,
                      criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        for i in range(1, t):
            nxt, status, _ = cv2.calcOpticalFlowPyrLK(gray[i - 1], gray[i], pts, None, **params)
            ok = status[:, 0].astype(bool) & valid[i - 1]
            inside = (nxt[:, 0, 0] >= 0) & (nxt[:, 0, 0] < w) & (nxt[:, 0, 1] >= 0) & (nxt[:, 0, 1] < h)
            ok &= inside
            pts = np.where(ok[:, None, None], nxt, pts)          # a lost point stays where it was, marked invalid
            tracks[i], valid[i] = pts[:, 0], ok
        return tracks, valid


class TorchScriptTracker:
    """A learned point tracker saved with TorchScript (``torch.jit.save``), called as CoTracker is:
    ``module(video (1, T, 3, H, W) float in 0..255, queries (1, K, 3) [t, x, y]) -> (tracks (1, T, K, 2) [x, y],
    visibility (1, T, K))``; the queries are the ``grid`` x ``grid`` lattice at frame 0. A point counts where the
    tracker sees it (visibility > 0.5 when it gives probabilities)."""

    def __init__(self, path: str, grid: int = 16, device: str = "cpu") -> None:
        import torch

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"fvmd tracker: {path}: no such file (expected a TorchScript point tracker "
                                    f"saved with torch.jit.save; nothing is downloaded)")
        self.module = torch.jit.load(str(p), map_location=device).eval()
        self.grid, self.device = grid, torch.device(device)
        self.name = f"torchscript:{p.name}"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        t, h, w = frames.shape[:3]
        pts = grid_points(h, w, self.grid)
        queries = np.concatenate([np.zeros((len(pts), 1), np.float32), pts], axis=1)   # (K, 3) [t = 0, x, y]
        with torch.inference_mode():
            video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float()
            tracks, vis = self.module(video[None], torch.from_numpy(queries).to(self.device)[None])
        if tuple(tracks.shape) != (1, t, len(pts), 2) or tuple(vis.shape) != (1, t, len(pts)):
            raise ValueError(f"{self.name}: expected tracks (1, {t}, {len(pts)}, 2) and visibility "
                             f"(1, {t}, {len(pts)}), got {tuple(tracks.shape)} and {tuple(vis.shape)}")
        valid = vis[0] > 0.5 if vis.is_floating_point() else vis[0].bool()
        return tracks[0].float().cpu().numpy(), valid.cpu().numpy()


def load_tracker(spec: str | None, grid: int = 16, device: str = "cpu") -> LucasKanade | TorchScriptTracker:
    """None or "lucas-kanade" -> ``LucasKanade(grid)``; anything else is the path of a ``TorchScriptTracker``."""
    if spec is None or spec == LucasKanade.name:
        return LucasKanade(grid)
    return TorchScriptTracker(spec, grid, device)


def _histograms(field: np.ndarray, valid: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """A motion field (S, K, 2) -> per cell: direction histogram weighted by magnitude, magnitude histogram;
    each normalised by the cell's valid samples."""
    mag = np.linalg.norm(field, axis=-1)
    ang = np.arctan2(field[..., 1], field[..., 0])
    abin = np.floor((ang + np.pi) / (2 * np.pi) * ANGLE_BINS).astype(int) % ANGLE_BINS
    mbin = np.digitize(mag, MAGNITUDE_EDGES[1:-1])
    cell = np.broadcast_to(cells, mag.shape)
    out = np.zeros((n_cells, ANGLE_BINS + len(MAGNITUDE_EDGES) - 1))
    np.add.at(out, (cell[valid], abin[valid]), mag[valid])
    np.add.at(out, (cell[valid], ANGLE_BINS + mbin[valid]), 1.0)
    counts = np.bincount(cell[valid], minlength=n_cells)[:, None]
    return (out / np.maximum(counts, 1)).ravel()


def motion_features(tracks: np.ndarray, valid: np.ndarray, grid: int, cells: int = 2) -> np.ndarray:
    """Tracks (T, K, 2) of a ``grid`` x ``grid`` lattice -> the clip's feature vector: velocity and acceleration
    histograms over ``cells`` x ``cells`` spatial cells."""
    k = grid * grid
    if tracks.shape[1] != k:
        raise ValueError(f"motion_features: {tracks.shape[1]} tracks, expected {grid} x {grid}")
    row, col = np.divmod(np.arange(k), grid)
    cell = (row * cells // grid) * cells + col * cells // grid
    vel = np.diff(tracks, axis=0)
    vel_ok = valid[1:] & valid[:-1]
    acc = np.diff(vel, axis=0)
    acc_ok = vel_ok[1:] & vel_ok[:-1]
    n = cells * cells
    return np.concatenate([_histograms(vel, vel_ok, cell[None], n), _histograms(acc, acc_ok, cell[None], n)])


def video_features(videos, tracker=None, cells: int = 2, frames: int = CLIP_FRAMES) -> np.ndarray:
    """Each video's first ``frames`` frames -> its motion feature vector; (n, d)."""
    tracker = tracker or LucasKanade()
    out = []
    for v in videos:
        v = np.asarray(v)
        if v.ndim != 4 or v.shape[0] < frames or v.shape[-1] != 3:
            raise ValueError(f"fvmd: videos must be (T >= {frames}, H, W, 3), got {v.shape}")
        tracks, valid = tracker(v[:frames])
        out.append(motion_features(tracks, valid, getattr(tracker, "grid"), cells))
    return np.stack(out)


@dataclass(frozen=True)
class MotionDistance:
    distance: Distance
    tracker: str

    def to_json(self) -> dict:
        return {**self.distance.to_json(), "tracker": self.tracker}


def fvmd(real, fake, tracker=None, cells: int = 2, bootstrap: int = 0, seed: int = 0) -> MotionDistance:
    tracker = tracker or LucasKanade()
    return MotionDistance(frechet(video_features(real, tracker, cells), video_features(fake, tracker, cells),
                                  bootstrap=bootstrap, seed=seed), tracker.name)
