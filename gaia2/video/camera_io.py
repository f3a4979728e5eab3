"""A camera's frames, whatever they are stored as: one video file or one image per timestamp.

The shard stages call these two and never ask which: ``check_camera`` at ingest, ``decode_camera`` for a
window. The work is in ``gaia2.video.decode`` (videos) and ``gaia2.video.images`` (images).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gaia2.video.decode import VideoInfo, check_video, decode_frames
from gaia2.video.images import check_images, decode_images

if TYPE_CHECKING:
    from gaia2.config.shards import ToleranceConfig
    from gaia2.schema.clip import Camera


def check_camera(cam: Camera, name: str, check: str, tolerance: ToleranceConfig | None) -> VideoInfo:
    """Check ``cam``'s files against its record (``check``: ``ingest.decode_check``); ``name`` is its field
    in messages (``cameras[front]``). Raises ``ClipError`` with the reject reason."""
    if cam.frames is not None:
        return check_images(cam.frames, name, len(cam.timestamps), check, width=cam.width, height=cam.height,
                            tolerance=tolerance)
    return check_video(cam.video, name, len(cam.timestamps), check, width=cam.width, height=cam.height,
                       frame_rate=cam.frame_rate, tolerance=tolerance)


def decode_camera(cam: Camera, indices: np.ndarray, scaled_wh: tuple[int, int], crop_xy: tuple[int, int],
                  out_wh: tuple[int, int], tolerance_px: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Frames ``indices`` of ``cam`` scaled to ``scaled_wh``, centre-cropped to ``out_wh``: (K, H, W, 3) uint8,
    written into ``out`` when given (one camera's part of a window's frames).

    ``tolerance_px`` (``ingest.tolerance.resolution_px``): how far an image may be from the declared size (a
    video's size was checked once at ingest; each image is its own file, checked as it is decoded).
    """
    if cam.frames is not None:
        return decode_images(cam.frames, cam.name, indices, scaled_wh, crop_xy, out_wh,
                             native_wh=(cam.width, cam.height), tolerance_px=tolerance_px, out=out)
    return decode_frames(cam.video, cam.name, indices, scaled_wh, crop_xy, out_wh, out)
