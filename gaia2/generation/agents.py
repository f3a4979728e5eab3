"""A spec's agents (3D boxes in the ego frame over time) -> the world model's agent features, through the shard
pipeline's own projection (``gaia2.detection.features.agent_features``); and boxes -> latent-grid cells.

Training gives each latent the boxes of its middle frame (``gaia2.world_model.sample``), so an agent is placed
at the time of each latent's middle frame on the rig's frame grid.
"""

from __future__ import annotations

import numpy as np

from gaia2.camera.model import CameraModel
from gaia2.detection.features import agent_features
from gaia2.generation.spec import AgentSpec
from gaia2.schema.metadata import category_id


def middle_frame_times(latent_steps: int, temporal_factor: int, frame_rate: float) -> np.ndarray:
    """(T,) seconds of each latent's middle frame (index temporal_factor // 2) on the frame grid."""
    return (np.arange(latent_steps) * temporal_factor + temporal_factor // 2) / frame_rate


def agent_boxes(agent: AgentSpec, times: np.ndarray) -> np.ndarray:
    """(len(times), 8) ego-frame boxes (x, y, z, l, w, h, yaw rad, category) and NaN rows where the agent does
    not exist (outside ``visible``)."""
    t = np.asarray(times, np.float64)
    length, width, height = agent.size
    if agent.track is not None:
        key_t = np.array([k.t for k in agent.track])
        centres = np.array([k.center if len(k.center) == 3 else (*k.center, height / 2) for k in agent.track])
        yaws = np.radians([k.yaw_deg for k in agent.track])
        centre = np.stack([np.interp(t, key_t, centres[:, i]) for i in range(3)], axis=1)
        yaw = np.interp(t, key_t, yaws)
    else:
        c = agent.start.center
        start = np.array(c if len(c) == 3 else (*c, height / 2), np.float64)
        centre = start + np.concatenate([np.outer(t, agent.velocity), np.zeros((len(t), 1))], axis=1)
        yaw = np.radians(agent.start.yaw_deg + agent.yaw_rate_deg * t)
    out = np.concatenate([centre, np.tile([length, width, height], (len(t), 1)), yaw[:, None],
                          np.full((len(t), 1), category_id(agent.category))], axis=1)
    if agent.visible is not None:
        out[(t < agent.visible[0]) | (t > agent.visible[1])] = np.nan
    return out


def spec_agent_features(agents: list[AgentSpec], times: np.ndarray, cameras: list[CameraModel], max_agents: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Agents at ``times`` (one per latent) -> features (T, N, A, 13) float32 and valid (T, N, A) bool."""
    per_agent = [agent_boxes(a, times) for a in agents]
    frames = []
    for i in range(len(times)):
        rows = [b[i] for b in per_agent if np.isfinite(b[i]).all()]
        frames.append(np.array(rows, np.float64).reshape(-1, 8))
    return agent_features(frames, list(cameras), max_agents)


def camera_to_grid(x: np.ndarray, y: np.ndarray, camera_wh: tuple[int, int], frame_hw: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised camera-image coordinates (0..1 of ``camera_wh``) -> normalised coordinates of the generated
    frame (``frame_hw``), which is the camera image scaled to cover it and centre-cropped (as the tokenizer's
    clips are cut from shard images)."""
    (cw, ch), (fh, fw) = camera_wh, frame_hw
    s = max(fw / cw, fh / ch)
    x0, y0 = (cw * s - fw) / 2, (ch * s - fh) / 2
    return (x * cw * s - x0) / fw, (y * ch * s - y0) / fh


def rect_cells(rect: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Rectangles (..., 4) x1, y1, x2, y2 in 0..1 of the frame -> (..., H, W) bool: the cells they overlap."""
    h, w = grid_hw
    x1, y1, x2, y2 = (rect[..., i, None] for i in range(4))
    cols = np.arange(w)
    rows = np.arange(h)
    in_x = (x1 < (cols + 1) / w) & (x2 > cols / w)                       # (..., W)
    in_y = (y1 < (rows + 1) / h) & (y2 > rows / h)                       # (..., H)
    return in_y[..., :, None] & in_x[..., None, :]


def feature_cells(features: np.ndarray, valid: np.ndarray, cameras: list[CameraModel], frame_hw: tuple[int, int],
                  grid_hw: tuple[int, int]) -> np.ndarray:
    """Agent features (T, N, A, 13) / valid (T, N, A) -> (T, N, H, W) bool: the latent cells any valid agent's
    projected 2D box overlaps."""
    t, n = valid.shape[:2]
    out = np.zeros((t, n, *grid_hw), bool)
    for j, cam in enumerate(cameras):
        box = features[:, j, :, :4].astype(np.float64)                   # (T, A, 4) normalised to the camera
        x1, y1 = camera_to_grid(box[..., 0], box[..., 1], (cam.width, cam.height), frame_hw)
        x2, y2 = camera_to_grid(box[..., 2], box[..., 3], (cam.width, cam.height), frame_hw)
        cells = rect_cells(np.stack([x1, y1, x2, y2], -1), grid_hw)      # (T, A, H, W)
        out[:, j] = (cells & valid[:, j, :, None, None]).any(axis=1)
    return out
