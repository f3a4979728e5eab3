"""Apparent ego motion from multi-camera video alone: how fast the ego moves and which way it turns.

The estimator never sees the commanded action; it is what "action adherence" compares the command
against. Per chunk of frames it fits the two parameters of planar ego motion,

    speed v (m/s along ego +x; the origin is the rear axle, which has no side slip)
    yaw rate w (rad/s, left = counter-clockwise seen from above = positive),

by direct photometric alignment of every camera at once (classical, no learned weights, no optical
flow field in between): for a candidate (v, w) the ego travels an arc of length v dt turning by w dt
between two frames; a static ground point P (ego frame, x forward, y left, z up, z = 0 on the ground)
moves in the ego frame to

    P' = Rz(-w dt) (P - arc(v dt, w dt)),

and is projected through the camera (extrinsics, intrinsics, distortion) into the later frame. The
cost of a candidate is the robust (Cauchy) grey-level difference between each pixel of the earlier
frame and where the candidate sends it in the later one, averaged over frame pairs (gaps of 1, 2 and 4
frames) and pixels per camera, then over cameras (each camera weighs the same).

- Speed: ground pixels only (the ray of each pixel below the horizon hits z = 0 at a known depth, so
  the cameras' known height fixes the metric scale). Only pixels whose grey level changed between
  the two frames vote: compressed video (x264 at these sizes) freezes low-texture blocks, and frozen
  pixels would otherwise pull every estimate to "standing still".
- Yaw: all textured pixels. Ground pixels move with the arc (a road that bends with the ego keeps
  its lane lines in place only for the right w / v); pixels above the horizon have unknown depth, so
  each takes the best of a few inverse depths: rotation shifts them whatever the depth, translation
  only along its epipolar direction.

Frames are grey, contrast-stretched per camera and clip, and band-passed: the high-pass drops what stays
put in the image whatever the motion (vignetting, headlight pools, sky gradients), which would vote for
"standing still". Search is a coarse grid then a local grid on each parameter in turn, with a parabola
through the best three costs. Frames smaller than ``min_work_height`` rows are upsampled (intrinsics
follow); 64 x 128 shard video and 32 x 64 frames both work (Gaussian blur of 1.5 px at 32 x 64 too), the
quickstart's tiny tokenizer's reconstructions do not: besides the blur they hold each 8-frame latent nearly
still and jump between latents, so there is little left that moves (see benchmarks/ego_motion.py).

Speed is metric when the calibration is right (median error ~6% on shard video), with a small upward
bias (~1 m/s) below ~8 m/s: moving agents and noise are among the pixels that change.

    cams = {c["name"]: CameraCalibration.from_record(c, frames_hw=(64, 128)) for c in meta["cameras"]}
    est = estimate_ego_motion(videos, cams, frame_rate=20.0, chunk=8)
    est.speed, est.yaw_rate, est.curvature            # per clip
    est.chunk_speed, est.chunk_yaw_rate               # (N,) per chunk of 8 frames (one latent)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from gaia2.camera.model import distort, resize_crop_intrinsics, undistort


@dataclass(frozen=True)
class CameraCalibration:
    """One camera: intrinsics in pixels of the frames given to the estimator, camera -> ego extrinsics.

    ``intrinsics``: (4,) fx, fy, cx, cy, pixel centres at integers (OpenCV). Use ``from_normalised``
    for fx/W, fy/H, cx/W, cy/H, or ``from_record`` for a shard / clip record at another image size.
    ``extrinsics``: (4, 4) camera (x right, y down, z forward) -> ego (x forward, y left, z up, z = 0
    on the ground). ``distortion``: OpenCV k1, k2, p1, p2, k3 on normalised coordinates.
    """
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        for name, shape in (("intrinsics", (4,)), ("extrinsics", (4, 4)), ("distortion", (5,))):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"CameraCalibration.{name}: expected shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"CameraCalibration.{name}: non-finite value")
            object.__setattr__(self, name, value)
        if not (self.intrinsics[0] > 0 and self.intrinsics[1] > 0):
            raise ValueError(f"CameraCalibration.intrinsics: fx, fy must be positive, got {self.intrinsics[:2]}")
        if self.extrinsics[2, 3] <= 0:
            raise ValueError(f"CameraCalibration.extrinsics: camera height {self.extrinsics[2, 3]} m must be above "
                             "the ground (z > 0): ground motion sets the speed scale")

    @classmethod
    def from_normalised(cls, intrinsics, extrinsics, frames_hw: tuple[int, int],
                        distortion=None) -> "CameraCalibration":
        """``intrinsics`` as (fx/W, fy/H, cx/W, cy/H) of frames of size ``frames_hw`` = (H, W)."""
        h, w = frames_hw
        fx, fy, cx, cy = np.asarray(intrinsics, dtype=np.float64)
        return cls(np.array([fx * w, fy * h, cx * w, cy * h]), np.asarray(extrinsics),
                   np.zeros(5) if distortion is None else np.asarray(distortion))

    @classmethod
    def from_record(cls, cam: Mapping[str, Any], frames_hw: tuple[int, int] | None = None) -> "CameraCalibration":
        """A camera entry of a shard sample / clip record ({width, height, intrinsics, extrinsics,
        distortion}) for frames decoded at ``frames_hw`` = (H, W) the way ``gaia2.tokenizer.clips.decode_camera``
        does it (scale to cover, centre crop); ``None`` keeps the record's size."""
        intr = np.asarray(cam["intrinsics"], dtype=np.float64)
        if frames_hw is not None:
            intr = _resized(intr, (int(cam["height"]), int(cam["width"])), frames_hw)
        dist = cam.get("distortion")
        return cls(intr, np.asarray(cam["extrinsics"], dtype=np.float64),
                   np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64))


@dataclass(frozen=True)
class EgoMotionConfig:
    """Knobs of ``estimate_ego_motion``; defaults tuned on 64 x 128 shard video (and checked at 32 x 64)."""
    chunk: int = 8                        # frames per chunk (8 = one latent of the video tokenizer)
    min_work_height: int = 32             # smaller frames are upsampled to this many rows (aspect kept)
    gaps: tuple[int, ...] = (1, 2, 4)     # frame pairs (i, i + gap) inside a chunk that vote
    max_speed_mps: float = 45.0           # speed grid: 0 .. max, step speed_step_mps
    speed_step_mps: float = 1.5
    max_yaw_rate: float = 0.6             # rad/s, yaw grid: -max .. max, step yaw_step
    yaw_step: float = 0.05
    max_ground_range_m: float = 40.0      # farther ground moves too little to be worth its noise
    min_depression_deg: float = 3.0       # ground rays closer than this to the horizon are dropped
    inverse_depths: tuple[float, ...] = (0.0, 0.05, 0.2)   # 1/m, for pixels above the horizon
    min_gradient: float = 2.0             # grey levels per pixel (band-passed frames) a pixel needs to vote
    min_change: float = 6.0               # grey-level change between the two frames a ground pixel needs to
                                          # vote on speed (frozen compressed blocks do not)
    cauchy_scale: float = 4.0             # grey levels (of the band-passed frames)
    max_pixels: int = 250                 # voting pixels per camera, pair and kind (ground / above), thinned
    blur_px: float = 0.8                  # Gaussian blur of the working frames, pixels at 64 rows (scaled with h)
    highpass_px: float = 4.0              # minus a Gaussian blur of this many pixels at 64 rows (0: off)
    min_speed_mps: float = 1.0            # below this the curvature yaw_rate / speed is NaN

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"EgoMotionConfig.chunk must be >= 1, got {self.chunk}")
        if self.min_work_height < 8:
            raise ValueError(f"EgoMotionConfig.min_work_height must be >= 8, got {self.min_work_height}")
        if not self.gaps or min(self.gaps) < 1:
            raise ValueError(f"EgoMotionConfig.gaps must be a non-empty tuple of ints >= 1, got {self.gaps}")
        for name in ("max_speed_mps", "speed_step_mps", "max_yaw_rate", "yaw_step", "max_ground_range_m",
                     "cauchy_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EgoMotionConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.min_depression_deg < 90:
            raise ValueError(f"EgoMotionConfig.min_depression_deg must be in [0, 90), got {self.min_depression_deg}")
        if not self.inverse_depths or min(self.inverse_depths) < 0:
            raise ValueError(f"EgoMotionConfig.inverse_depths must be non-empty and >= 0, got {self.inverse_depths}")
        for name in ("min_gradient", "min_change", "blur_px", "highpass_px", "min_speed_mps"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EgoMotionConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_pixels < 1:
            raise ValueError(f"EgoMotionConfig.max_pixels must be >= 1, got {self.max_pixels}")


@dataclass(frozen=True)
class EgoMotionEstimate:
    """Apparent ego motion of one clip. Chunk k covers frames k*chunk .. (k+1)*chunk (its last frame is the
    next chunk's first), N = ceil((T - 1) / chunk).

    speed: m/s (metric through the cameras' height above the ground); yaw_rate: rad/s, left positive;
    curvature = yaw_rate / speed in 1/m, NaN where speed < ``min_speed_mps``. Clip values are the
    means over chunks, weighted by their number of frame steps. Video that shows no motion (static, or
    blank) reads as standing still: speed 0, yaw rate 0.
    """
    speed: float
    yaw_rate: float
    curvature: float
    chunk_speed: np.ndarray       # (N,)
    chunk_yaw_rate: np.ndarray    # (N,)
    chunk_curvature: np.ndarray   # (N,)
    chunk: int
    cameras: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (NaN stays float('nan'))."""
        return {"speed": self.speed, "yaw_rate": self.yaw_rate, "curvature": self.curvature, "chunk": self.chunk,
                "cameras": list(self.cameras), "chunk_speed": self.chunk_speed.tolist(),
                "chunk_yaw_rate": self.chunk_yaw_rate.tolist(), "chunk_curvature": self.chunk_curvature.tolist()}


def _resized(intr: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    new, _, _ = resize_crop_intrinsics(intr, (src_hw[1], src_hw[0]), (dst_hw[1], dst_hw[0]))
    return new


@dataclass(frozen=True)
class _View:
    """One camera at the working resolution: frames and the fixed geometry of its pixels."""
    grey: np.ndarray          # (T, h, w) float32, contrast-stretched, band-passed
    grad: np.ndarray          # (T, h * w) float32 gradient magnitude
    intr: np.ndarray          # (4,)
    dist: np.ndarray          # (5,) float32, so that projecting float32 points stays float32
    rot: np.ndarray           # (3, 3) camera -> ego
    centre: np.ndarray        # (3,) ego frame
    r_max: float              # largest normalised radius the image reaches (distortion is monotonic up to it)
    ground: np.ndarray        # (G,) flat pixel index of ground pixels
    ground_xy: np.ndarray     # (G, 2) their ground points (x, y), ego frame (z = 0)
    far: np.ndarray           # (F,) flat pixel index of pixels above the horizon
    far_dirs: np.ndarray      # (F, 3) their unit rays, ego frame

    @property
    def hw(self) -> tuple[int, int]:
        return self.grey.shape[1], self.grey.shape[2]


def _view(frames: np.ndarray, calib: CameraCalibration, cfg: EgoMotionConfig) -> _View:
    h0, w0 = frames.shape[1:3]
    h = max(h0, cfg.min_work_height)
    w = w0 if h == h0 else max(8, int(round(w0 * h / h0)))
    intr = calib.intrinsics if (h, w) == (h0, w0) else _resized(calib.intrinsics, (h0, w0), (h, w))
    g = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(g, [1, 99])
    # One stretch per clip and camera (not per frame): night clips get the same contrast, frames stay comparable.
    g = ((g - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.float32)
    grey = np.empty((len(g), h, w), np.float32)
    grad = np.empty_like(grey)
    px = h / 64.0                   # filter sizes are given for 64-row frames
    for i, f in enumerate(g):
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != (h0, w0) else f
        # Band-pass: the high-pass drops what does not move with the scene, the blur keeps the cost smooth
        # in the motion parameters.
        if cfg.highpass_px > 0:
            f = f - cv2.GaussianBlur(f, (0, 0), cfg.highpass_px * px)
        f = cv2.GaussianBlur(f, (0, 0), cfg.blur_px * px) if cfg.blur_px > 0 else f
        grey[i] = f
        grad[i] = np.hypot(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)) / 8

    fx, fy, cx, cy = intr
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    xy = undistort(np.stack([(u - cx) / fx, (v - cy) / fy], axis=-1), calib.distortion).reshape(-1, 2)
    r_max = float(np.max(np.linalg.norm(xy, axis=-1))) * 1.05
    rot, centre = calib.extrinsics[:3, :3], calib.extrinsics[:3, 3]
    ray = np.concatenate([xy, np.ones_like(xy[:, :1])], axis=-1) @ rot.T
    ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
    lam = np.where(ray[:, 2] < -1e-9, -centre[2] / np.minimum(ray[:, 2], -1e-9), np.inf)
    pts = centre + np.minimum(lam, 1e6)[:, None] * ray
    rng = np.linalg.norm(pts[:, :2] - centre[:2], axis=-1)
    ground = np.flatnonzero((-ray[:, 2] > math.sin(math.radians(cfg.min_depression_deg)))
                            & (rng < cfg.max_ground_range_m))
    far = np.flatnonzero(ray[:, 2] > -math.sin(math.radians(1.0)))
    return _View(grey, grad.reshape(len(g), -1), intr, calib.distortion.astype(np.float32), rot, centre, r_max, ground,
                 pts[ground, :2], far, ray[far])


def _motion(speed: np.ndarray, yaw: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidates' ego motion over ``dt`` s: rotation Rz(-dtheta) (C, 3, 3) taking old ego coordinates to new
    ones, and the displacement (C, 3) of the ego along its arc (exact for any angle), old coordinates."""
    dist, dtheta = speed * dt, yaw * dt
    dx = dist * np.sinc(dtheta / np.pi)
    dy = dist * (dtheta / 2) * np.sinc(dtheta / (2 * np.pi)) ** 2
    c, s = np.cos(dtheta), np.sin(dtheta)
    rz = np.zeros((len(speed), 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, s, -s, c, 1.0
    return rz, np.stack([dx, dy, np.zeros_like(dx)], axis=-1)


def _to_pixels(view: _View, x_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame points (C, S, 3) (any positive scale) -> pixel maps u, v (C, S) float32 and a validity mask."""
    z = x_cam[..., 2]
    ok = z > 1e-6
    zs = np.where(ok, z, 1.0)
    x, y = x_cam[..., 0] / zs, x_cam[..., 1] / zs
    ok &= x * x + y * y < view.r_max ** 2        # beyond it the distortion polynomial folds back
    xy = distort(np.stack([np.where(ok, x, 0), np.where(ok, y, 0)], axis=-1), view.dist)
    u = (xy[..., 0] * view.intr[0] + view.intr[2]).astype(np.float32)
    v = (xy[..., 1] * view.intr[1] + view.intr[3]).astype(np.float32)
    h, w = view.hw
    ok &= (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    return u, v, ok


def _ground_maps(view: _View, rz: np.ndarray, shift: np.ndarray,
                 subset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where ground pixels ``subset`` (indices into ``view.ground``) land after each candidate motion: u, v, ok (C, S).

    A ground point (x, y, 0) goes to Rz (P - shift) in the new ego frame and R^T (. - c) in the camera:
    one 3 x 3 map of (x, y, 1) per candidate.
    """
    rt = view.rot.T
    a = np.einsum("ij,cjk->cik", rt, rz)                                     # (C, 3, 3) = R^T Rz
    m = np.concatenate([a[:, :, :2], (-np.einsum("cij,cj->ci", a, shift) - rt @ view.centre)[:, :, None]], axis=2)
    xy = view.ground_xy[subset]
    xy1 = np.concatenate([xy, np.ones((len(xy), 1))], axis=1).astype(np.float32)
    return _to_pixels(view, xy1 @ m.transpose(0, 2, 1).astype(np.float32))


def _far_maps(view: _View, rz: np.ndarray, shift: np.ndarray, inv_depth: float, subset: np.ndarray):
    """As ``_ground_maps`` for pixels ``subset`` (indices into ``view.far``) above the horizon at inverse depth
    ``inv_depth`` (0 = infinity)."""
    rt = view.rot.T
    a = np.einsum("ij,cjk->cik", rt, rz)                                     # (C, 3, 3)
    # q R^T (Rz (c + d / q - shift) - c) = R^T Rz d + q R^T (Rz (c - shift) - c)
    off = inv_depth * (np.einsum("cij,cj->ci", a, view.centre - shift) - rt @ view.centre)
    x_cam = view.far_dirs[subset].astype(np.float32) @ a.transpose(0, 2, 1).astype(np.float32)
    return _to_pixels(view, x_cam + off[:, None, :].astype(np.float32))


def _thin(mask: np.ndarray, limit: int) -> np.ndarray:
    """Indices of ``mask``, every k-th one so that at most ``limit`` remain (deterministic)."""
    idx = np.flatnonzero(mask)
    return idx[::-(-len(idx) // limit)] if len(idx) > limit else idx


def _residual(img: np.ndarray, u: np.ndarray, v: np.ndarray, ref: np.ndarray, scale: float) -> np.ndarray:
    """Cauchy loss log(1 + (I(u, v) - ref)^2 / scale^2) with I sampled bilinearly: (C, S)."""
    got = cv2.remap(img, np.ascontiguousarray(u), np.ascontiguousarray(v), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    r = (got - ref[None]) * np.float32(1.0 / scale)
    return np.log1p(r * r)


def _cost(views: list[_View], pairs: list[tuple[int, int]], rate: float, speed: np.ndarray, yaw: np.ndarray,
          cfg: EgoMotionConfig, for_speed: bool) -> np.ndarray:
    """Cost of each candidate (speed (C,), yaw (C,)) -> (C,): per camera the mean Cauchy photometric residual
    over its voting pixels of all pairs, averaged over the cameras that have any.

    Cameras weigh the same whatever their number of voting pixels: at speed a side camera's whole ground
    changes every frame, and one camera fooled by a vehicle alongside must not outvote the others.
    """
    by_gap: dict[int, list[int]] = {}
    for i, j in pairs:
        by_gap.setdefault(j - i, []).append(i)
    total = np.zeros(len(speed))
    cams = np.zeros(len(speed))
    for view in views:
        num = np.zeros(len(speed))
        den = np.zeros(len(speed))
        flat = view.grey.reshape(len(view.grey), -1)
        for gap, starts in by_gap.items():
            rz, shift = _motion(speed, yaw, gap / rate)
            # Ground pixels: depth from the ground plane. The voting pixels of all pairs are mapped at once.
            sels = []
            for i in starts:
                sel = view.grad[i, view.ground] > cfg.min_gradient
                if for_speed:
                    sel &= np.abs(flat[i + gap, view.ground] - flat[i, view.ground]) > cfg.min_change
                sels.append(_thin(sel, cfg.max_pixels))
            union = np.unique(np.concatenate(sels))
            if union.size:
                u, v, ok = _ground_maps(view, rz, shift, union)
                for i, sel in zip(starts, sels):
                    if sel.size:
                        pos = np.searchsorted(union, sel)
                        rho = _residual(view.grey[i + gap], u[:, pos], v[:, pos], flat[i, view.ground[sel]],
                                        cfg.cauchy_scale)
                        num += np.where(ok[:, pos], rho, 0.0).sum(axis=1)
                        den += ok[:, pos].sum(axis=1)
            if for_speed or not view.far.size:
                continue
            # Pixels above the horizon: the best of a few depths (0 = at infinity, rotation only).
            sels = [_thin(view.grad[i, view.far] > cfg.min_gradient, cfg.max_pixels) for i in starts]
            union = np.unique(np.concatenate(sels))
            if not union.size:
                continue
            best = [np.full((len(speed), sel.size), np.inf, np.float32) for sel in sels]
            for q in cfg.inverse_depths:
                u, v, ok = _far_maps(view, rz, shift, q, union)
                for k, (i, sel) in enumerate(zip(starts, sels)):
                    if sel.size:
                        pos = np.searchsorted(union, sel)
                        rho = _residual(view.grey[i + gap], u[:, pos], v[:, pos], flat[i, view.far[sel]],
                                        cfg.cauchy_scale)
                        best[k] = np.where(ok[:, pos], np.minimum(best[k], rho), best[k])
            for b in best:
                seen = np.isfinite(b)
                num += np.where(seen, b, 0.0).sum(axis=1)
                den += seen.sum(axis=1)
        # A candidate that sends all of a camera's pixels out of view is not judged by that camera.
        total += np.where(den > 0, num / np.maximum(den, 1), 0.0)
        cams += den > 0
    return np.where(cams > 0, total / np.maximum(cams, 1), np.inf)


def _best(grid: np.ndarray, cost: np.ndarray, default: float) -> float:
    """Grid minimum, refined by a parabola through it and its neighbours; ``default`` if no candidate was judged."""
    if not np.isfinite(cost).any():
        return default
    k = int(np.argmin(cost))
    if 0 < k < len(grid) - 1 and np.all(np.isfinite(cost[k - 1:k + 2])):
        c0, c1, c2 = cost[k - 1:k + 2]
        curv = c0 - 2 * c1 + c2
        if curv > 0:
            return float(grid[k] + 0.5 * (c0 - c2) / curv * (grid[k + 1] - grid[k - 1]) / 2)
    return float(grid[k])


def _fit_chunk(views: list[_View], pairs: list[tuple[int, int]], rate: float,
               cfg: EgoMotionConfig) -> tuple[float, float]:
    """(speed m/s, yaw rate rad/s) of one chunk: coarse then local grids on each parameter in turn.

    Video that shows no motion reads as standing still: no textured ground pixel that changed gives speed 0,
    no textured pixel at all yaw rate 0 (a blank generation is not "unknown", it does not move).
    """
    speeds = np.arange(0.0, cfg.max_speed_mps + 1e-9, cfg.speed_step_mps)
    yaws = np.arange(-cfg.max_yaw_rate, cfg.max_yaw_rate + 1e-9, cfg.yaw_step)
    v = _best(speeds, _cost(views, pairs, rate, speeds, np.zeros_like(speeds), cfg, for_speed=True), 0.0)
    w = _best(yaws, _cost(views, pairs, rate, np.full_like(yaws, v), yaws, cfg, for_speed=False), 0.0)
    local = np.linspace(-1.0, 1.0, 9)
    speeds = np.clip(v + local * cfg.speed_step_mps, 0.0, None)
    v = max(0.0, _best(speeds, _cost(views, pairs, rate, speeds, np.full_like(speeds, w), cfg, for_speed=True), v))
    yaws = w + local * cfg.yaw_step
    w = _best(yaws, _cost(views, pairs, rate, np.full_like(yaws, v), yaws, cfg, for_speed=False), w)
    return v, w


def _curvature(yaw_rate: np.ndarray, speed: np.ndarray, min_speed: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(speed >= max(min_speed, 1e-9), yaw_rate / np.maximum(speed, 1e-9), np.nan)


def _check_inputs(videos: Mapping[str, np.ndarray], cameras: Mapping[str, CameraCalibration],
                  frame_rate: float) -> int:
    if not videos:
        raise ValueError("estimate_ego_motion: no camera videos given")
    missing = sorted(set(videos) - set(cameras))
    if missing:
        raise ValueError(f"estimate_ego_motion: camera names missing from the calibration: {missing}")
    if not isinstance(frame_rate, (int, float, np.floating, np.integer)) or not (math.isfinite(frame_rate)
                                                                                 and frame_rate > 0):
        raise ValueError(f"estimate_ego_motion: frame_rate must be a positive number of Hz, got {frame_rate!r}")
    lengths = {}
    for name, frames in videos.items():
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"estimate_ego_motion: camera {name!r}: expected frames (T, H, W, 3), "
                             f"got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"estimate_ego_motion: camera {name!r}: expected uint8 frames, got {arr.dtype}")
        if arr.shape[1] < 8 or arr.shape[2] < 8:
            raise ValueError(f"estimate_ego_motion: camera {name!r}: frames of {arr.shape[1]}x{arr.shape[2]} pixels "
                             "are too small (need at least 8x8)")
        if not isinstance(cameras[name], CameraCalibration):
            raise ValueError(f"estimate_ego_motion: camera {name!r}: calibration must be a CameraCalibration, "
                             f"got {type(cameras[name]).__name__}")
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(f"estimate_ego_motion: cameras have different frame counts: {lengths}")
    t = next(iter(lengths.values()))
    if t < 2:
        raise ValueError(f"estimate_ego_motion: too few frames ({t}); need at least 2")
    return t


def estimate_ego_motion(videos: Mapping[str, np.ndarray], cameras: Mapping[str, CameraCalibration],
                        frame_rate: float, chunk: int | None = None,
                        config: EgoMotionConfig = EgoMotionConfig()) -> EgoMotionEstimate:
    """Apparent ego speed and yaw rate of one multi-camera clip, per chunk and per clip.

    videos: {camera: (T, H, W, 3) uint8}, the same T >= 2 for all (sizes may differ per camera);
    cameras: {camera: CameraCalibration}, intrinsics in pixels of those frames (extra entries ignored);
    frame_rate: Hz; chunk: frames per chunk (default ``config.chunk``).
    Raises ValueError naming the problem for bad shapes or dtypes, too few frames, cameras without
    calibration, or a non-positive frame rate.
    """
    chunk = config.chunk if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"estimate_ego_motion: chunk must be >= 1, got {chunk}")
    t = _check_inputs(videos, cameras, frame_rate)
    names = tuple(videos)
    views = [_view(np.asarray(videos[n]), cameras[n], config) for n in names]
    n_chunks = -(-(t - 1) // chunk)
    speed, yaw, steps = np.zeros(n_chunks), np.zeros(n_chunks), np.zeros(n_chunks)
    for k in range(n_chunks):
        first, last = k * chunk, min((k + 1) * chunk, t - 1)
        gaps = [g for g in config.gaps if g <= last - first] or [last - first]
        pairs = [(i, i + g) for g in gaps for i in range(first, last - g + 1)]
        speed[k], yaw[k] = _fit_chunk(views, pairs, float(frame_rate), config)
        steps[k] = last - first
    v, w = float(np.average(speed, weights=steps)), float(np.average(yaw, weights=steps))
    return EgoMotionEstimate(v, w, float(_curvature(np.array(w), np.array(v), config.min_speed_mps)),
                             speed, yaw, _curvature(yaw, speed, config.min_speed_mps), chunk, names)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two (N,) sequences (pairs with a NaN dropped); ties get their average rank,
    so it is Pearson's correlation of the average ranks (as ``scipy.stats.spearmanr``). NaN for fewer than
    3 pairs or a constant sequence."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"rank_correlation: sequences of different lengths {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / den) if den > 0 else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def sign_agreement(commanded, apparent, min_abs: float) -> tuple[float, int]:
    """(fraction of entries with |commanded| > ``min_abs`` whose ``apparent`` has the same sign, their number);
    the fraction is NaN when none qualifies. E.g. curvature (1/m) against apparent yaw rate: only the sign counts."""
    c, a = np.asarray(commanded, dtype=np.float64).ravel(), np.asarray(apparent, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise ValueError(f"sign_agreement: sequences of different lengths {c.size} and {a.size}")
    sel = np.abs(c) > min_abs
    n = int(sel.sum())
    return (float(np.mean(np.sign(a[sel]) == np.sign(c[sel]))) if n else float("nan")), n
