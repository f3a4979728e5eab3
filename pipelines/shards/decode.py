"""Stage 1b: decode a selected window of every camera onto the frame grid at shard resolution.

The frames are scaled to cover the shard size and centre-cropped; each camera's intrinsics are
adjusted to match, so projections into the shard image stay exact.
"""

from __future__ import annotations

import json

import numpy as np

from gaia2.camera.model import resize_crop_intrinsics
from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.windows import cut_windows
from gaia2.schema.clip import Clip
from gaia2.schema.errors import ClipError, Reason
from gaia2.storage import redact
from pipelines.rejects import batch_rejects, map_rows, reject_columns
from pipelines.shards.common import object_column, parse_clip


def shard_calibration(clip: Clip, out_wh: tuple[int, int]) -> tuple[list[dict], list[tuple]]:
    """Calibration of every camera at shard resolution, and each camera's (scaled size, crop)."""
    cams, geometry = [], []
    for cam in clip.cameras:
        intr, scaled, crop = resize_crop_intrinsics(cam.intrinsics, (cam.width, cam.height), out_wh)
        cams.append({"name": cam.name, "width": out_wh[0], "height": out_wh[1], "intrinsics": intr.tolist(),
                     "extrinsics": cam.extrinsics.tolist(), "distortion": cam.distortion.tolist(),
                     "native_frame_rate": cam.frame_rate})
        geometry.append((scaled, crop))
    return cams, geometry


class DecodeWindows:
    """Callable Ray Data stage: planned window rows -> rows with ``frames`` (N, T, H, W, 3) uint8,
    ``cameras_json`` and ``timestamps`` (T,); a window that fails gets its reject columns and empty
    frames (``pipelines/rejects.py``), at once for a broken one, after ``cfg.retry.attempts`` tries for a
    transient error (a flaky read, out of memory: ``pipelines/retry.py``)."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def decode(self, clip_json: bytes | str, index: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
        from gaia2.video.camera_io import decode_camera

        clip = parse_clip(clip_json)
        w = self.cfg.window
        window = cut_windows(clip, w.frames, w.hop, w.grid_hz)[index]
        out_wh = (self.cfg.image.width, self.cfg.image.height)
        cams, geometry = shard_calibration(clip, out_wh)
        frames = []
        for cam, meta, (scaled, crop), idx in zip(clip.cameras, cams, geometry, window.frame_indices):
            try:
                frames.append(decode_camera(cam, idx, scaled, crop, out_wh, self.cfg.ingest.tolerance.resolution_px))
            except FileNotFoundError:   # ingest opened it: deleted or moved since, which no retry undoes
                # (only a video's: a missing image is already a ClipError naming the frame)
                raise ClipError(Reason.MISSING_CAMERA, f"{cam.name}: video file not found: {redact(cam.video)} "
                                                       "(present at ingest)") from None
            meta["frame_timestamps"] = cam.timestamps[idx].tolist()
        return np.stack(frames), cams, window.timestamps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        empty = (np.zeros((0, 0, 0, 0, 3), np.uint8), [], np.zeros(0))
        decoded, rejects = map_rows(lambda i: self.decode(batch["clip_json"][i], int(batch["window"][i])),
                                    n, "decode", Reason.DECODE_FAILED, empty, batch_rejects(batch, n),
                                    retry=self.cfg.retry)
        out = dict(batch)
        out["frames"] = object_column([f for f, _, _ in decoded])
        out["cameras_json"] = np.asarray([json.dumps(c) for _, c, _ in decoded], dtype=object)
        out["timestamps"] = object_column([t for _, _, t in decoded])
        return out | reject_columns(rejects)


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def decode_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return DecodeWindows(config_json)(batch)
