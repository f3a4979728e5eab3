"""Stage: 3D agent detection of each window -> the (T, N, A, 13) agent features of its shard sample.

Used as an actor stage, the detector loaded once per actor:
    ds.map_batches(DetectAgents, fn_constructor_kwargs={"kind": det.kind, "checkpoint": det.checkpoint,
                   "max_agents": det.max_agents, "score_threshold": det.score_threshold, "retry": cfg.retry},
                   batch_size=det.batch_size, compute=ray.data.ActorPoolStrategy(size=det.concurrency),
                   num_cpus=det.num_cpus, num_gpus=det.num_gpus)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from gaia2.camera.model import CameraModel
from gaia2.config.shards import RetryConfig
from gaia2.detection import build_detector
from gaia2.detection.base import DetectionError
from gaia2.detection.features import FEATURE_DIM, agent_features
from gaia2.schema.clip import Clip
from gaia2.schema.errors import Reason
from pipelines.rejects import batch_rejects, map_rows, reject_columns
from pipelines.retry import retrying, retrying_batched
from pipelines.shards.common import object_column, parse_clip

_CAMERA_KEYS = ("name", "width", "height", "intrinsics", "extrinsics", "distortion")


def cameras_from_json(cameras_json: str) -> list[CameraModel]:
    """JSON list of {name, width, height, intrinsics, extrinsics, distortion, ...} (shard-resolution
    calibration; other keys are ignored) -> camera models, in order."""
    records: Any = json.loads(cameras_json)
    if not isinstance(records, list) or not records:
        raise DetectionError("cameras_json: expected a non-empty list of camera calibrations")
    cams = []
    for n, rec in enumerate(records):
        missing = [k for k in _CAMERA_KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise DetectionError(f"cameras_json[{n}]: missing {missing}")
        intr = np.asarray(rec["intrinsics"], dtype=np.float64)
        extr = np.asarray(rec["extrinsics"], dtype=np.float64)
        dist = np.asarray(rec["distortion"], dtype=np.float64)
        if intr.shape != (4,) or extr.shape != (4, 4) or dist.shape != (5,):
            raise DetectionError(f"cameras_json[{n}] ({rec['name']}): intrinsics (4,), extrinsics (4, 4) and "
                                 f"distortion (5,) expected, got {intr.shape}, {extr.shape}, {dist.shape}")
        cams.append(CameraModel(int(rec["width"]), int(rec["height"]), intr, dist, extr))
    return cams


class DetectAgents:
    """Callable Ray Data stage: rows with ``frames`` (N, T, H, W, 3) uint8, ``cameras_json``,
    ``timestamps`` (T,) and ``clip_json`` -> adds ``boxes`` (T, N, A, 13) float32 and ``boxes_valid``
    (T, N, A) bool per row, A = ``max_agents`` slots.

    Rejected rows pass through with (0, 0, A, 13) / (0, 0, A) arrays; a row whose detection fails is
    rejected (stage "detect") instead of stopping the build: at once for a broken row, after
    ``retry.attempts`` tries for a transient error (``pipelines/retry.py``; None: RetryConfig's defaults).
    Out of memory in a network detector halves its images per forward (down to 1) first.
    """

    def __init__(self, kind: str, checkpoint: str | None, max_agents: int, score_threshold: float,
                 retry: RetryConfig | None = None):
        if max_agents < 1:
            raise ValueError(f"detection.max_agents: must be >= 1, got {max_agents}")
        self.detector = build_detector(kind, checkpoint, score_threshold)
        self.max_agents = max_agents
        self.retry = retry or RetryConfig()

    def detect(self, frames: np.ndarray, cameras: list[CameraModel], timestamps: np.ndarray,
               clip: Clip | None) -> list[np.ndarray]:
        """The detector's boxes of one window, retried; a network's batch is its images per forward."""
        det = self.detector
        if not hasattr(det, "max_images_per_forward"):   # ground truth: nothing batched to shrink
            return retrying(lambda: det.detect(frames, cameras, timestamps, clip), self.retry)
        configured = det.max_images_per_forward   # None: all N * T images in one forward

        def run(images_per_forward: int) -> list[np.ndarray]:
            det.max_images_per_forward = images_per_forward
            return det.detect(frames, cameras, timestamps, clip)

        try:
            return retrying_batched(run, configured or frames.shape[0] * frames.shape[1], self.retry)
        finally:   # the next window starts from the configured size again
            det.max_images_per_forward = configured

    def detect_row(self, frames: np.ndarray, cameras_json: str, timestamps: np.ndarray,
                   clip_json: bytes | str) -> tuple[np.ndarray, np.ndarray]:
        cameras = cameras_from_json(cameras_json)
        frames = np.asarray(frames)
        # Only ground truth reads the clip record; a network detector skips the parse.
        clip = parse_clip(clip_json) if self.detector.requires_clip else None
        if not getattr(self.detector, "any_time", False):   # a network: what the frames show, per grid time
            boxes = self.detect(frames, cameras, np.asarray(timestamps, dtype=np.float64), clip)
            return agent_features(boxes, cameras, self.max_agents)
        # Labels: each camera's boxes at its own frames' times, not the grid's (the cameras of a rig are not
        # synchronous: a box labelled 40 ms off a camera's exposure lands beside the object in its image).
        per_camera = []
        for n, (cam, meta) in enumerate(zip(cameras, json.loads(cameras_json))):
            times = np.asarray(meta.get("frame_timestamps", timestamps), dtype=np.float64)
            per_camera.append(agent_features(self.detect(frames[n:n + 1], [cam], times, clip), [cam], self.max_agents))
        return np.concatenate([f for f, _ in per_camera], axis=1), np.concatenate([v for _, v in per_camera], axis=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["frames"])
        empty = (np.zeros((0, 0, self.max_agents, FEATURE_DIM), np.float32), np.zeros((0, 0, self.max_agents), bool))
        feats, rejects = map_rows(
            lambda i: self.detect_row(batch["frames"][i], str(batch["cameras_json"][i]), batch["timestamps"][i],
                                      batch["clip_json"][i]),
            n, "detect", Reason.DECODE_FAILED, empty, batch_rejects(batch, n))
        out = dict(batch)
        out["boxes"] = object_column([f for f, _ in feats])
        out["boxes_valid"] = object_column([v for _, v in feats])
        return out | reject_columns(rejects)
