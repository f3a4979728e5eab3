"""Stage 1b: decode a selected window of every camera onto the frame grid at shard resolution.

The frames are scaled to cover the shard size and centre-cropped; each camera's intrinsics are
adjusted to match, so projections into the shard image stay exact.
"""

from __future__ import annotations

import json

import numpy as np

from gaia2.camera.model import resize_crop_intrinsics
from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.windows import Window, cut_windows
from gaia2.schema.clip import Clip
from gaia2.schema.errors import ClipError, Reason
from gaia2.storage import redact
from gaia2.video.decode import take_frames
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


def _files(clip: Clip) -> tuple:
    """What a clip's cameras read, and at which size: equal for two records of one clip."""
    return tuple((c.name, c.video, tuple(c.frames or ()), c.width, c.height, len(c.timestamps)) for c in clip.cameras)


class DecodeWindows:
    """Callable Ray Data stage: planned window rows -> rows with ``frames`` (N, T, H, W, 3) uint8,
    ``cameras_json`` and ``timestamps`` (T,); a window that fails gets its reject columns and empty
    frames (``pipelines/rejects.py``), at once for a broken one, after ``cfg.retry.attempts`` tries for a
    transient error (a flaky read, out of memory: ``pipelines/retry.py``)."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def window(self, clip_json: bytes | str, index: int) -> tuple[Clip, Window, list[dict], list[tuple]]:
        """The clip, its window ``index``, and each camera's shard calibration and (scaled size, crop)."""
        clip = parse_clip(clip_json)
        w = self.cfg.window
        window = cut_windows(clip, w.frames, w.hop, w.grid_hz)[index]
        cams, geometry = shard_calibration(clip, (self.cfg.image.width, self.cfg.image.height))
        return clip, window, cams, geometry

    def decode(self, clip_json: bytes | str, index: int, shared: dict | None = None
               ) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """``shared``: frames already decoded for this clip (``shared_frames``), by camera number."""
        from gaia2.video.camera_io import decode_camera

        clip, window, cams, geometry = self.window(clip_json, index)
        out_wh = (self.cfg.image.width, self.cfg.image.height)
        # Each camera decodes straight into its part of the window's array (stacking after was a copy of it all).
        frames = np.empty((len(clip.cameras), len(window.timestamps), out_wh[1], out_wh[0], 3), np.uint8)
        tolerance = self.cfg.ingest.tolerance.resolution_px
        for n, (cam, meta, (scaled, crop), idx) in enumerate(zip(clip.cameras, cams, geometry,
                                                                  window.frame_indices)):
            if shared and n in shared:
                decoded, have = shared[n]
                take_frames(have, np.searchsorted(decoded, idx), out=frames[n])
            else:
                try:
                    decode_camera(cam, idx, scaled, crop, out_wh, tolerance, out=frames[n])
                except FileNotFoundError:   # ingest opened it: deleted or moved since, which no retry undoes
                    # (only a video's: a missing image is already a ClipError naming the frame)
                    raise ClipError(Reason.MISSING_CAMERA, f"{cam.name}: video file not found: {redact(cam.video)} "
                                                           "(present at ingest)") from None
            meta["frame_timestamps"] = cam.timestamps[idx].tolist()
        return frames, cams, window.timestamps

    def shared_frames(self, batch: dict[str, np.ndarray],
                      n: int) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Each camera's frames read by two or more windows of one clip in the batch, decoded once:
        {clip_id: {camera number: (frame indices, frames)}}.

        The plan sorts windows by key, so a clip's selected windows are neighbours in the batch, and the
        stride lets them overlap in time: decoding each camera's union of frames in one pass opens each
        video once and decodes a shared frame once (a frame decodes to the same pixels either way). Anything
        that fails here is left out: each window then decodes on its own and meets the error itself, with
        its own retries and reject.
        """
        from gaia2.video.camera_io import decode_camera

        if "clip_id" not in batch:
            return {}
        groups: dict[str, list[int]] = {}
        for i, reject in enumerate(batch_rejects(batch, n)):
            if reject is None:
                groups.setdefault(str(batch["clip_id"][i]), []).append(i)
        out: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        out_wh = (self.cfg.image.width, self.cfg.image.height)
        for clip_id, rows in groups.items():
            if len(rows) < 2:
                continue
            try:
                parts = [self.window(batch["clip_json"][i], int(batch["window"][i])) for i in rows]
                clip, _, _, geometry = parts[0]
                if len({_files(p[0]) for p in parts}) != 1:   # one clip_id, one record (dedupe_clip_ids)
                    continue
                out[clip_id] = {}
                for c, (cam, (scaled, crop)) in enumerate(zip(clip.cameras, geometry)):
                    idx = np.unique(np.concatenate([p[1].frame_indices[c] for p in parts]))
                    out[clip_id][c] = idx, decode_camera(cam, idx, scaled, crop, out_wh,
                                                         self.cfg.ingest.tolerance.resolution_px)
            except Exception:   # noqa: BLE001 - the windows decode one by one instead, and report it
                continue
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        empty = (np.zeros((0, 0, 0, 0, 3), np.uint8), [], np.zeros(0))
        shared = self.shared_frames(batch, n)
        decoded, rejects = map_rows(
            lambda i: self.decode(batch["clip_json"][i], int(batch["window"][i]),
                                  shared.get(str(batch["clip_id"][i])) if shared else None),
            n, "decode", Reason.DECODE_FAILED, empty, batch_rejects(batch, n), retry=self.cfg.retry)
        out = dict(batch)
        out["frames"] = object_column([f for f, _, _ in decoded])
        out["cameras_json"] = np.asarray([json.dumps(c) for _, c, _ in decoded], dtype=object)
        out["timestamps"] = object_column([t for _, _, t in decoded])
        return out | reject_columns(rejects)


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def decode_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return DecodeWindows(config_json)(batch)
