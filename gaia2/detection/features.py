"""Ego-frame 3D boxes -> the 13 agent features of every frame, camera and agent slot.

Feature layout (index: meaning), per slot:
    0..3   x1, y1, x2, y2: the box's projected 2D extent, clipped to the image and normalised to
           [0, 1] of the shard image. Pixel u (OpenCV pixel-centre convention) maps to
           (u + 0.5) / width, so the image's outer edges are exactly 0 and 1.
    4..6   box centre (x, y, z) in the camera frame (x right, y down, z forward), metres.
    7..9   size l, w, h, metres.
    10, 11 sin, cos of the box yaw relative to the camera: ``yaw_box - heading(camera)``, both
           measured about the ego up axis (counter-clockwise seen from above), where
           ``heading(camera)`` is the heading of the camera's optical axis projected on the ego
           ground plane. 0 = the agent faces the way the camera looks; the definition ignores the
           camera's pitch and roll.
    12     category id from ``AGENT_CATEGORIES`` (1..5), as float; padding slots are all zeros.

A box is left out for a camera when its centre is not in front of it (z_cam <= near) or its 2D
extent does not overlap the image. The 2D extent comes from the 8 corners, with the box first
clipped at the near plane (edges that cross it contribute their crossing point), then projected
by ``CameraModel.project`` (which pushes points beyond the field of view far off the image, in
their own direction). Slots are ordered by distance from the camera centre, nearest first, and
only the nearest ``max_agents`` are kept.
"""

from __future__ import annotations

import numpy as np

from gaia2.camera.model import CameraModel, box_corners
from gaia2.detection.base import BOX_DIM, Boxes3D, DetectionError
from gaia2.schema.metadata import AGENT_CATEGORIES
from gaia2.schema.sample import AGENT_FEATURES

FEATURE_DIM = AGENT_FEATURES   # the contract's layout, defined once in gaia2/schema/sample.py
NEAR = 0.1   # metres; the same default as CameraModel.project

# box_corners orders corner k by sign bits (x, y, z) = (k >> 2, k >> 1, k) & 1: an edge joins two
# corners that differ in exactly one bit.
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def camera_heading(camera: CameraModel) -> float:
    """Heading (radians, about the ego up axis, 0 = ego +x) of the camera's optical axis."""
    axis = camera.cam_to_ego[:3, 2]          # camera +z in the ego frame
    return float(np.arctan2(axis[1], axis[0]))


def check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    """Validate one frame's (M, 8) ego-frame boxes; returns them as float64."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != BOX_DIM:
        raise DetectionError(f"{name}: expected (M, {BOX_DIM}) boxes, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DetectionError(f"{name}: non-finite box value")
    cat = arr[:, 7]
    if np.any(cat != np.round(cat)) or np.any(cat < 1) or np.any(cat >= len(AGENT_CATEGORIES)):
        raise DetectionError(f"{name}: category ids must be integers in 1..{len(AGENT_CATEGORIES) - 1}, "
                             f"got {sorted(set(cat.tolist()))}")
    return arr


def _valid(frames: list[np.ndarray]) -> bool:
    """Whether every frame's (M_t, 8) boxes pass ``check_boxes``."""
    if not frames:
        return True
    boxes = np.concatenate(frames)
    cat = boxes[:, 7]
    return bool(np.isfinite(boxes).all() and (cat == np.round(cat)).all() and (cat >= 1).all()
                and (cat < len(AGENT_CATEGORIES)).all())


def _camera_features(boxes: np.ndarray, camera: CameraModel, near: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """boxes (K, 8) ego -> features (K, 13), visible (K,) bool, distance from the camera (K,)."""
    centre = camera.ego_to_camera_points(boxes[:, :3])                          # (K, 3)
    corners = camera.ego_to_camera_points(box_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6]))  # (K, 8, 3)
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]                   # (K, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    cross = (za > near) != (zb > near)
    s = (near - za) / np.where(cross, zb - za, 1.0)
    pts = np.concatenate([corners, a + s[..., None] * (b - a)], axis=1)        # (K, 20, 3)
    use = np.concatenate([corners[..., 2] > near, cross], axis=1)               # (K, 20)
    uv, _ = camera.project(pts, near)
    x = (uv[..., 0] + 0.5) / camera.width
    y = (uv[..., 1] + 0.5) / camera.height
    x1, x2 = np.where(use, x, np.inf).min(1), np.where(use, x, -np.inf).max(1)
    y1, y2 = np.where(use, y, np.inf).min(1), np.where(use, y, -np.inf).max(1)
    visible = (centre[:, 2] > near) & (x2 > 0) & (x1 < 1) & (y2 > 0) & (y1 < 1)
    rel_yaw = boxes[:, 6] - camera_heading(camera)
    feats = np.concatenate([
        np.clip(np.stack([x1, y1, x2, y2], axis=1), 0.0, 1.0),
        centre, boxes[:, 3:6], np.sin(rel_yaw)[:, None], np.cos(rel_yaw)[:, None], boxes[:, 7:8],
    ], axis=1)
    return feats, visible, np.linalg.norm(centre, axis=1)


def agent_features(boxes_per_frame: list[Boxes3D], cameras: list[CameraModel], max_agents: int,
                   near: float = NEAR) -> tuple[np.ndarray, np.ndarray]:
    """T frames of (M_t, 8) ego-frame boxes, N cameras -> features (T, N, A, 13) float32 and
    valid (T, N, A) bool, A = ``max_agents`` slots; see the module docstring for the layout."""
    if max_agents < 1:
        raise DetectionError(f"max_agents: must be >= 1, got {max_agents}")
    if not cameras:
        raise DetectionError("cameras: empty")
    n_frames = len(boxes_per_frame)
    frames = [np.asarray(b, dtype=np.float64) for b in boxes_per_frame]
    # Checked all at once (hundreds of frames per window); only a failure is looked for frame by frame.
    if not (all(b.ndim == 2 and b.shape[1] == BOX_DIM for b in frames) and _valid(frames)):
        frames = [check_boxes(b, f"boxes_per_frame[{t}]") for t, b in enumerate(frames)]   # raises, naming it
    feats = np.zeros((n_frames, len(cameras), max_agents, FEATURE_DIM), dtype=np.float32)
    valid = np.zeros((n_frames, len(cameras), max_agents), dtype=bool)
    if n_frames == 0:
        return feats, valid
    # All frames' boxes together: the projection runs once per camera, not once per frame.
    boxes = np.concatenate(frames, axis=0)                                       # (K, 8)
    frame = np.repeat(np.arange(n_frames), [len(b) for b in frames])            # (K,)
    if boxes.shape[0] == 0:
        return feats, valid
    for n, cam in enumerate(cameras):
        # A box whose centre is not in front of the camera is never visible (_camera_features): most of a rig's
        # boxes, for each of its cameras, skip the corner projection.
        ahead = np.flatnonzero(cam.ego_to_camera_points(boxes[:, :3])[:, 2] > near)
        f, visible, dist = _camera_features(boxes[ahead], cam, near)               # rows of boxes[ahead]
        sub = np.flatnonzero(visible)
        order = sub[np.lexsort((dist[sub], frame[ahead[sub]]))]   # frame-major, nearest first (stable)
        fr = frame[ahead[order]]
        rank = np.arange(order.size) - np.searchsorted(fr, fr, side="left")   # slot within its frame
        keep = rank < max_agents
        feats[fr[keep], n, rank[keep]] = f[order[keep]]
        valid[fr[keep], n, rank[keep]] = True
    return feats, valid
