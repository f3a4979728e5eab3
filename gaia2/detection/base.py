"""The 3D detector interface: multi-camera frames of one window -> ego-frame boxes per frame.

A box row is ``(cx, cy, cz, l, w, h, yaw, category_id)`` in the ego frame (ISO 8855: x forward,
y left, z up; yaw about z, 0 = facing +x), the same layout as ``Clip.boxes.at(t)``; category ids
index ``AGENT_CATEGORIES`` (1..5; 0 is padding and never appears in a box).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from gaia2.camera.model import CameraModel

if TYPE_CHECKING:
    from gaia2.schema.clip import Clip

Boxes3D = np.ndarray   # (M, 8) ego frame: cx, cy, cz, l, w, h, yaw, category_id
BOX_DIM = 8


class DetectionError(ValueError):
    """Inputs a detector cannot work on (shapes that disagree, a clip without boxes, ...)."""


class Detector3D(ABC):
    """Detects the agents of one window, frame by frame, from all of its cameras together."""

    # Whether ``detect`` needs the source ``Clip`` (ground truth does, a network does not), so a
    # pipeline stage can skip parsing the clip record for detectors that ignore it.
    requires_clip: bool = False
    # Whether boxes can be had at any time (labels, not pixels): then a pipeline asks for each camera's boxes at
    # its own frames' times, since the cameras of a rig are not synchronous.
    any_time: bool = False

    @abstractmethod
    def detect(self, frames: np.ndarray, cameras: list[CameraModel], timestamps: np.ndarray,
               clip: "Clip | None" = None) -> list[Boxes3D]:
        """frames: (N_cams, T, H, W, 3) uint8 shard-resolution frames; cameras: N_cams shard-resolution
        camera models (intrinsics already adjusted for the resize/crop); timestamps: (T,) grid times
        on the drive clock -> T arrays (M_t, 8) of ego-frame boxes."""


def check_inputs(frames: np.ndarray, cameras: list[CameraModel], timestamps: np.ndarray) -> tuple[int, int]:
    """Validate the arguments of ``Detector3D.detect``; returns (N_cams, T)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 5 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", type(frames).__name__)
        raise DetectionError(f"frames: expected (N_cams, T, H, W, 3) array, got {shape}")
    if frames.dtype != np.uint8:
        raise DetectionError(f"frames: expected uint8, got {frames.dtype}")
    n_cams, t, h, w, _ = frames.shape
    if len(cameras) != n_cams:
        raise DetectionError(f"cameras: {len(cameras)} camera models for {n_cams} cameras of frames")
    for n, cam in enumerate(cameras):
        if (cam.width, cam.height) != (w, h):
            raise DetectionError(f"cameras[{n}]: calibrated for {cam.width}x{cam.height}, frames are {w}x{h}; "
                                 "pass the shard-resolution camera models")
    ts = np.asarray(timestamps)
    if ts.ndim != 1 or ts.shape[0] != t:
        raise DetectionError(f"timestamps: expected ({t},) for {t} frames, got shape {ts.shape}")
    return n_cams, t
