"""Ground-truth pass-through for labelled sources: the clip's own boxes at each grid time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gaia2.camera.model import CameraModel
from gaia2.detection.base import Boxes3D, DetectionError, Detector3D, check_inputs

if TYPE_CHECKING:
    from gaia2.schema.clip import Clip


class GroundTruthDetector(Detector3D):
    """Returns ``clip.boxes.at(t)``: the labelled boxes of the box timestamp nearest each grid time.

    ``max_gap_s`` bounds how far that nearest label may be from the grid time: a window that runs
    past the labelled span would otherwise silently reuse the last labelled frame's boxes.
    ``None`` disables the check.
    """

    requires_clip = True
    any_time = True

    def __init__(self, max_gap_s: float | None = 1.0):
        if max_gap_s is not None and not max_gap_s >= 0:
            raise ValueError(f"max_gap_s: must be >= 0 or None, got {max_gap_s}")
        self.max_gap_s = max_gap_s

    def detect(self, frames: np.ndarray, cameras: list[CameraModel], timestamps: np.ndarray,
               clip: "Clip | None" = None) -> list[Boxes3D]:
        check_inputs(frames, cameras, timestamps)
        if clip is None:
            raise DetectionError("ground-truth detection needs the source clip; got clip=None")
        if clip.boxes is None:
            raise DetectionError(f"clip {clip.clip_id}: has no ground-truth boxes; "
                                 "use detection.kind='network' for unlabelled sources")
        box_ts = clip.boxes.timestamps
        if box_ts.size == 0:
            raise DetectionError(f"clip {clip.clip_id}: boxes.timestamps is empty")
        times = np.asarray(timestamps, dtype=np.float64)
        if self.max_gap_s is not None and times.size:
            gaps = np.abs(box_ts[clip.boxes.nearest(times)] - times)
            far = np.flatnonzero(gaps > self.max_gap_s)
            if far.size:
                t, gap = float(times[far[0]]), float(gaps[far[0]])
                raise DetectionError(f"clip {clip.clip_id}: no labelled boxes within {self.max_gap_s} s of "
                                     f"t={t:.3f} (nearest is {gap:.3f} s away)")
        return clip.boxes.at_times(times)
