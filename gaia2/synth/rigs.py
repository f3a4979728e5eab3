"""Synthetic camera rigs: three vehicle platforms with 5 or 6 cameras at 20, 25 and 30 Hz.

Every rig names its cameras from one set, front camera first, so a consumer that wants five views
can take ``FIVE_VIEWS`` from any rig: front, front_left, front_right, rear_left, rear_right
(the 6-camera rigs add ``rear``). Rigs differ in mounting (height, position, yaw, pitch, roll),
image size, focal length, principal point and distortion; wide side cameras carry stronger
barrel distortion, as fisheye-ish surround cameras do.

Native image sizes differ per rig (128x72, 144x80, 160x96 at scale 1). Videos stay byte-reproducible
at any size because the encoder keeps x264 off its AVX-512 kernels (gaia2/video/encode.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gaia2.camera.model import CameraModel

FIVE_VIEWS: tuple[str, ...] = ("front", "front_left", "front_right", "rear_left", "rear_right")


@dataclass(frozen=True)
class CameraSpec:
    name: str
    position: tuple[float, float, float]   # ego frame, metres (x fwd, y left, z up)
    yaw_deg: float                         # about ego z, left positive; 0 looks along ego +x
    pitch_deg: float                       # positive tilts the optical axis down
    roll_deg: float                        # about the optical axis
    hfov_deg: float                        # horizontal field of view, edge to edge, with distortion
    distortion: tuple[float, float, float, float, float]   # OpenCV k1, k2, p1, p2, k3
    principal_offset: tuple[float, float]  # (dx, dy) of the principal point from the centre, px at scale 1
    time_offset_s: float                   # exposure delay after the rig trigger, < one frame

    def cam_to_ego(self) -> np.ndarray:
        """(4, 4) camera -> ego: columns of the rotation are the camera x (right), y (down), z (fwd) axes."""
        yaw, pitch, roll = (math.radians(a) for a in (self.yaw_deg, self.pitch_deg, self.roll_deg))
        fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.cross(fwd, right)
        # Roll turns right/down about the optical axis.
        right, down = (math.cos(roll) * right + math.sin(roll) * down,
                       -math.sin(roll) * right + math.cos(roll) * down)
        out = np.eye(4)
        out[:3, :3] = np.stack([right, down, fwd], axis=1)
        out[:3, 3] = self.position
        return out


@dataclass(frozen=True)
class Rig:
    rig_id: str
    frame_rate: float          # Hz, shared by the rig's cameras (one trigger)
    width: int                 # native image size at scale 1 (even)
    height: int
    cameras: tuple[CameraSpec, ...]

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"rig {self.rig_id}: image size {self.width}x{self.height} must be even")
        names = [c.name for c in self.cameras]
        if names[0] != "front" or len(set(names)) != len(names):
            raise ValueError(f"rig {self.rig_id}: camera names {names} must be unique and start with 'front'")
        if any(not 0 <= c.time_offset_s < 1.0 / self.frame_rate for c in self.cameras):
            raise ValueError(f"rig {self.rig_id}: camera time offsets must lie in [0, 1/frame_rate)")

    def image_size(self, scale: float = 1.0) -> tuple[int, int]:
        """(width, height) at ``scale``, rounded to even numbers for yuv420p."""
        if not scale > 0:
            raise ValueError(f"native_scale must be positive, got {scale}")
        return max(2, 2 * round(self.width * scale / 2)), max(2, 2 * round(self.height * scale / 2))

    def intrinsics(self, index: int, scale: float = 1.0) -> np.ndarray:
        """(4,) fx, fy, cx, cy of camera ``index`` at ``scale``."""
        cam = self.cameras[index]
        w, h = self.image_size(scale)
        sx, sy = w / self.width, h / self.height
        # The image edge sees the ray at hfov/2 off-axis: its *distorted* normalised radius sets f.
        r = math.tan(math.radians(cam.hfov_deg) / 2)
        k1, k2, _, _, k3 = cam.distortion
        f = (self.width / 2) / (r * (1 + k1 * r**2 + k2 * r**4 + k3 * r**6))
        cx = self.width / 2 - 0.5 + cam.principal_offset[0]
        cy = self.height / 2 - 0.5 + cam.principal_offset[1]
        # Pixel centres scale as u' = (u + 0.5) s - 0.5 (same convention as resize_crop_intrinsics).
        return np.array([f * sx, f * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5])

    def camera_model(self, index: int, scale: float = 1.0) -> CameraModel:
        w, h = self.image_size(scale)
        cam = self.cameras[index]
        return CameraModel(w, h, self.intrinsics(index, scale), np.asarray(cam.distortion, dtype=np.float64),
                           cam.cam_to_ego())


@lru_cache(maxsize=64)
def camera_rays(rig_id: str, index: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera ``index`` of rig ``rig_id``: (ego-frame unit rays (H*W, 3), camera centre (3,)).

    Rays go through the distortion model once per camera and process (``CameraModel.pixel_rays``);
    cameras are rigid on the vehicle, so ego-frame rays never change.
    """
    rig = RIGS[rig_id]
    model = rig.camera_model(index, scale)
    rays = model.pixel_rays().reshape(-1, 3) @ model.cam_to_ego[:3, :3].T
    rays.setflags(write=False)
    centre = model.cam_to_ego[:3, 3].copy()
    centre.setflags(write=False)
    return rays, centre


def _cam(name, pos, yaw, pitch, roll, hfov, dist, pp, dt) -> CameraSpec:
    return CameraSpec(name, pos, yaw, pitch, roll, hfov, dist, pp, dt)


_SEDAN = Rig("sedan6_30hz", 30.0, 128, 72, (
    _cam("front", (1.85, 0.00, 1.42), 0.0, 2.0, 0.3, 70.0, (-0.06, 0.012, 0.0004, -0.0003, 0.0), (1.2, -0.8), 0.0010),
    _cam("front_left", (1.70, 0.82, 1.38), 58.0, 4.0, -0.4, 100.0, (-0.24, 0.055, 0.0006, 0.0004, 0.0), (-0.9, 0.6), 0.0030),
    _cam("front_right", (1.70, -0.82, 1.38), -58.0, 4.0, 0.5, 100.0, (-0.23, 0.052, -0.0005, 0.0003, 0.0), (0.7, 0.9), 0.0045),
    _cam("rear_left", (0.10, 0.90, 1.30), 128.0, 6.0, 0.2, 100.0, (-0.25, 0.060, 0.0003, -0.0006, 0.0), (0.5, -0.4), 0.0060),
    _cam("rear_right", (0.10, -0.90, 1.30), -128.0, 6.0, -0.3, 100.0, (-0.24, 0.057, -0.0004, 0.0005, 0.0), (-0.6, 0.3), 0.0075),
    _cam("rear", (-1.05, 0.00, 1.25), 180.0, 5.0, 0.1, 80.0, (-0.12, 0.025, 0.0002, 0.0001, 0.0), (0.4, 0.5), 0.0090),
))

_VAN = Rig("van5_25hz", 25.0, 144, 80, (
    _cam("front", (2.20, 0.00, 2.35), 0.0, 6.0, -0.2, 60.0, (-0.03, 0.006, 0.0, 0.0002, 0.0), (-1.0, 1.1), 0.0020),
    _cam("front_left", (1.90, 1.05, 2.20), 72.0, 10.0, 0.6, 104.0, (-0.30, 0.090, 0.0007, -0.0004, -0.010), (0.8, -0.5), 0.0040),
    _cam("front_right", (1.90, -1.05, 2.20), -72.0, 10.0, -0.5, 104.0, (-0.29, 0.086, -0.0006, 0.0005, -0.009), (-0.7, 0.4), 0.0055),
    _cam("rear_left", (-2.60, 1.10, 2.40), 145.0, 12.0, 0.3, 105.0, (-0.27, 0.070, 0.0004, 0.0003, -0.004), (0.3, 0.7), 0.0070),
    _cam("rear_right", (-2.60, -1.10, 2.40), -145.0, 12.0, -0.2, 105.0, (-0.27, 0.068, -0.0003, -0.0004, -0.004), (-0.4, -0.6), 0.0085),
))

_SUV = Rig("suv6_20hz", 20.0, 160, 96, (
    _cam("front", (2.05, 0.05, 1.68), 0.0, 1.0, 0.0, 90.0, (-0.10, 0.018, -0.0003, 0.0004, 0.0), (0.6, 1.4), 0.0015),
    _cam("front_left", (1.95, 0.92, 1.60), 50.0, 5.0, 0.4, 95.0, (-0.20, 0.042, 0.0005, 0.0002, 0.0), (-1.1, -0.7), 0.0050),
    _cam("front_right", (1.95, -0.92, 1.60), -50.0, 5.0, -0.4, 95.0, (-0.20, 0.041, -0.0004, 0.0003, 0.0), (1.0, 0.8), 0.0080),
    _cam("rear_left", (0.30, 0.98, 1.55), 115.0, 7.0, 0.2, 104.0, (-0.26, 0.062, 0.0006, -0.0003, 0.0), (0.9, 0.2), 0.0110),
    _cam("rear_right", (0.30, -0.98, 1.55), -115.0, 7.0, -0.1, 104.0, (-0.26, 0.061, -0.0005, 0.0004, 0.0), (-0.8, -0.3), 0.0140),
    _cam("rear", (-1.20, 0.00, 1.50), 180.0, 8.0, 0.0, 100.0, (-0.17, 0.032, 0.0001, -0.0002, 0.0), (0.2, -0.9), 0.0170),
))

RIGS: dict[str, Rig] = {rig.rig_id: rig for rig in (_SEDAN, _VAN, _SUV)}
