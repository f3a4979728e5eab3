"""A latent-shard sample -> the world model's inputs, per latent time step (numpy, no batch axis).

Each latent covers ``temporal_factor`` (8) consecutive frames of the window, so per-frame signals are
brought to the latent rate: each camera's own frame timestamps (the cameras of a rig are not
synchronous, and rigs differ in rate: paper §2.2.3 "Video Frequency") and the ego action (speed,
curvature) are averaged over the latent's frames; agent boxes are those of its middle frame (index 4 of
8); CLIP embeddings, metadata and calibrations are per sample. Samples written before the shards kept
per-camera frame times (no ``frame_timestamps`` in a camera's json) use the window's grid times for it.
The first ``cameras`` cameras of the sample's rig (in its json order) are used; boxes are padded or cut
to ``max_agents`` slots.
"""

from __future__ import annotations

import numpy as np

from gaia2.schema.metadata import VOCABULARY, VocabularyError, check_vocab_version

FIELDS = ("latents", "timestamps", "action", "agents", "agents_valid", "metadata", "clip", "intrinsics",
          "extrinsics", "distortion")


class SampleError(ValueError):
    """A latent sample that cannot be turned into world-model inputs (named by its key)."""


def per_latent(values: np.ndarray, steps: int) -> np.ndarray:
    """(frames, ...) -> (steps, ...): the mean over each latent's frames."""
    return values.reshape(steps, -1, *values.shape[1:]).mean(axis=1)


def world_model_sample(meta: dict, latents: np.ndarray, boxes: np.ndarray, boxes_valid: np.ndarray,
                       clip: np.ndarray, cameras: int, max_agents: int) -> dict[str, np.ndarray]:
    """One sample's json (``meta``) and arrays -> {field: array} with the shapes

    latents (T, N, L, H, W) float32; timestamps (T, N) s from the window's first grid time, per camera;
    action (T, 2) m/s, 1/m;
    agents (T, N, A, 13) float32; agents_valid (T, N, A) bool; metadata (V,) int64; clip (N, D) float32;
    intrinsics (N, 4) = fx/W, fy/H, cx/W, cy/H; extrinsics (N, 4, 4); distortion (N, 5).
    """
    key = meta.get("key", "?")
    try:   # ids of an older vocabulary mean the same under this one (append only); a newer one is refused
        check_vocab_version(meta.get("vocab_version", 1), f"sample {key!r}")
    except VocabularyError as err:
        raise SampleError(str(err)) from None
    steps, n_cam = latents.shape[:2]
    frames = len(meta["timestamps"])
    if n_cam < cameras:
        raise SampleError(f"sample {key!r}: {n_cam} cameras, the world model takes {cameras}")
    if frames % steps:
        raise SampleError(f"sample {key!r}: {frames} frames do not split into {steps} latent steps")
    per = frames // steps
    if boxes.shape[:2] != (frames, n_cam) or boxes_valid.shape != boxes.shape[:3]:
        raise SampleError(f"sample {key!r}: boxes {boxes.shape} / valid {boxes_valid.shape} do not match "
                          f"{frames} frames x {n_cam} cameras")
    mid = np.arange(steps) * per + per // 2
    agents = np.zeros((steps, cameras, max_agents, boxes.shape[-1]), np.float32)
    valid = np.zeros((steps, cameras, max_agents), bool)
    a = min(max_agents, boxes.shape[2])
    agents[:, :, :a] = boxes[mid, :cameras, :a]
    valid[:, :, :a] = boxes_valid[mid, :cameras, :a]
    cams = meta["cameras"][:cameras]
    ego = meta["ego"]
    action = np.stack([np.asarray(ego["speed"], np.float64), np.asarray(ego["curvature"], np.float64)], axis=-1)
    intrinsics = np.array([[c["intrinsics"][0] / c["width"], c["intrinsics"][1] / c["height"],
                            c["intrinsics"][2] / c["width"], c["intrinsics"][3] / c["height"]] for c in cams],
                          np.float32)
    grid = np.asarray(meta["timestamps"], np.float64)
    times = []
    for c in cams:
        t = np.asarray(c.get("frame_timestamps", grid), np.float64)
        if t.shape != grid.shape:
            raise SampleError(f"sample {key!r}: camera {c.get('name', '?')!r} has {len(t)} frame timestamps for "
                              f"{frames} frames")
        times.append(t)
    return {
        "latents": np.ascontiguousarray(latents[:, :cameras], dtype=np.float32),
        "timestamps": per_latent(np.stack(times, axis=1), steps).astype(np.float32),
        "action": per_latent(action, steps).astype(np.float32),
        "agents": agents,
        "agents_valid": valid,
        "metadata": np.array([int(meta["metadata"].get(k, 0)) for k in VOCABULARY], np.int64),
        "clip": np.ascontiguousarray(clip[:cameras], dtype=np.float32),
        "intrinsics": intrinsics,
        "extrinsics": np.array([c["extrinsics"] for c in cams], np.float32),
        "distortion": np.array([c["distortion"] for c in cams], np.float32),
    }
