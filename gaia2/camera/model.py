"""Pinhole camera with OpenCV radial-tangential distortion (k1, k2, p1, p2, k3).

Camera frame: x right, y down, z forward. Pixel (u, v) has its origin at the top-left corner of
the top-left pixel's centre convention used by OpenCV (pixel centres at integers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gaia2.schema.clip import Camera


def distort(xy: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Normalised undistorted (..., 2) -> normalised distorted (..., 2)."""
    k1, k2, p1, p2, k3 = k
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort(xy_d: np.ndarray, k: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Normalised distorted (..., 2) -> undistorted (..., 2) by fixed-point iteration (as OpenCV)."""
    k1, k2, p1, p2, k3 = k
    xy = xy_d.copy()
    for _ in range(iterations):
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        xy = np.stack([(xy_d[..., 0] - dx) / radial, (xy_d[..., 1] - dy) / radial], axis=-1)
    return xy


@lru_cache(maxsize=256)   # one per calibration: every projection asks, and the cameras of a rig repeat
def _max_undistorted_radius(width: int, height: int, intrinsics: tuple[float, ...],
                            distortion: tuple[float, ...]) -> float:
    fx, fy, cx, cy = intrinsics
    u = np.array([0, width - 1, 0, width - 1, cx, cx, 0, width - 1], dtype=np.float64)
    v = np.array([0, 0, height - 1, height - 1, 0, height - 1, cy, cy], dtype=np.float64)
    xy = undistort(np.stack([(u - cx) / fx, (v - cy) / fy], axis=-1), np.asarray(distortion))
    return float(np.max(np.linalg.norm(xy, axis=-1))) * 1.05


@dataclass(frozen=True)
class CameraModel:
    """Geometry of one camera: projection, back-projection and the camera<->ego transforms."""
    width: int
    height: int
    intrinsics: np.ndarray   # (4,) fx, fy, cx, cy
    distortion: np.ndarray   # (5,)
    cam_to_ego: np.ndarray   # (4, 4)

    @classmethod
    def from_record(cls, cam: Camera) -> "CameraModel":
        return cls(cam.width, cam.height, cam.intrinsics, cam.distortion, cam.extrinsics)

    @property
    def ego_to_cam(self) -> np.ndarray:
        r, t = self.cam_to_ego[:3, :3], self.cam_to_ego[:3, 3]
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = r.T, -r.T @ t
        return out

    def max_undistorted_radius(self) -> float:
        """Largest normalised radius that the image border reaches (distortion is monotonic up to it)."""
        return _max_undistorted_radius(self.width, self.height, tuple(np.asarray(self.intrinsics, np.float64).tolist()),
                                       tuple(np.asarray(self.distortion, np.float64).tolist()))

    def project(self, pts_cam: np.ndarray, near: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame points (..., 3) -> pixels (..., 2) and a mask of points in front of the camera.

        Points beyond the field of view are clamped to its edge radius before distortion, where
        the polynomial would otherwise fold back into the image.
        """
        z = pts_cam[..., 2]
        front = z > near
        xy = pts_cam[..., :2] / np.where(front, z, near)[..., None]
        r = np.linalg.norm(xy, axis=-1, keepdims=True)
        r_max = self.max_undistorted_radius()
        xy = np.where(r > r_max, xy * (r_max / np.maximum(r, 1e-12)) * 4.0, xy)   # far outside, still off-image
        xy_d = np.where(r > r_max, xy, distort(xy, self.distortion))
        fx, fy, cx, cy = self.intrinsics
        return np.stack([xy_d[..., 0] * fx + cx, xy_d[..., 1] * fy + cy], axis=-1), front

    def pixel_rays(self) -> np.ndarray:
        """Unit ray directions in the camera frame for every pixel centre: (H, W, 3)."""
        fx, fy, cx, cy = self.intrinsics
        v, u = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        xy = undistort(np.stack([(u - cx) / fx, (v - cy) / fy], axis=-1), self.distortion)
        rays = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def ego_to_camera_points(self, pts_ego: np.ndarray) -> np.ndarray:
        m = self.ego_to_cam
        return pts_ego @ m[:3, :3].T + m[:3, 3]


def resize_crop_intrinsics(intrinsics: np.ndarray, src_wh: tuple[int, int],
                           dst_wh: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Intrinsics after scaling the image to cover ``dst_wh`` and centre-cropping to it.

    Returns (new intrinsics, scaled size (w, h), crop offset (x0, y0)). Distortion coefficients act
    on normalised coordinates and are unchanged by this.
    """
    (sw, sh), (dw, dh) = src_wh, dst_wh
    scale = max(dw / sw, dh / sh)
    rw, rh = max(dw, int(round(sw * scale))), max(dh, int(round(sh * scale)))
    x0, y0 = (rw - dw) // 2, (rh - dh) // 2
    sx, sy = rw / sw, rh / sh
    fx, fy, cx, cy = intrinsics
    # Pixel centres: u' = (u + 0.5) * s - 0.5 - x0.
    new = np.array([fx * sx, fy * sy, (cx + 0.5) * sx - 0.5 - x0, (cy + 0.5) * sy - 0.5 - y0])
    return new, (rw, rh), (x0, y0)


def box_corners(center: np.ndarray, size: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Ego-frame boxes (M, 3), (M, 3) l w h, (M,) yaw -> corners (M, 8, 3)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs[None] * (size[:, None, :] / 2)                       # (M, 8, 3)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y, local[..., 2]], axis=-1) + center[:, None, :]
