"""Stage 1a: parse and validate each clip, check its videos, cut its windows.

One input row per clip; one output row per window, or a single reject row for a bad clip. No pixels
leave this stage: selection (split, stride, balancing) needs only metadata, and only the selected
windows are decoded in full later.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.windows import cut_windows, window_key
from gaia2.schema.clip import Clip, dumps
from gaia2.schema.errors import ClipError, Reason
from gaia2.video.decode import check_video
from pipelines.shards.sources import ClipRef, read_record

COLUMNS = ("kind", "key", "clip_id", "drive_id", "window", "start_time", "end_time", "reason", "detail",
           "location", "clip_json", "metadata_json", "track_json")


def _row(**values: Any) -> dict[str, Any]:
    row = {"kind": "", "key": "", "clip_id": "", "drive_id": "", "window": -1, "start_time": np.nan,
           "end_time": np.nan, "reason": "", "detail": "", "location": "", "clip_json": "",
           "metadata_json": "", "track_json": ""}
    row.update(values)
    return row


class IngestClips:
    """Callable Ray Data stage: ``ClipRef`` rows -> window rows and reject rows."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def validate(self, clip: Clip) -> None:
        if len(clip.cameras) < self.cfg.ingest.min_cameras:
            raise ClipError(Reason.MISSING_CAMERA,
                            f"{len(clip.cameras)} cameras, at least {self.cfg.ingest.min_cameras} required")
        for cam in clip.cameras:
            check_video(cam.video, cam.name, len(cam.timestamps), self.cfg.ingest.decode_check)

    def ingest(self, ref: ClipRef) -> list[dict[str, Any]]:
        clip_id = ref.ref_id
        try:
            clip = read_record(ref)
            clip_id = clip.clip_id
            self.validate(clip)
            windows = cut_windows(clip, self.cfg.window.frames, self.cfg.window.hop, self.cfg.window.grid_hz)
            if not windows:
                raise ClipError(Reason.TOO_SHORT, f"shorter than one window of {self.cfg.window.frames} frames "
                                                  f"on the frame grid")
        except ClipError as err:
            return [_row(kind="reject", clip_id=clip_id, reason=err.reason.value, detail=err.detail,
                         location=ref.location)]
        meta_json = json.dumps(clip.metadata, sort_keys=True)
        # Each window carries its own slice of the record: later stages parse kilobytes, not the clip.
        return [_row(kind="window", key=window_key(clip.clip_id, w.index), clip_id=clip.clip_id,
                     drive_id=clip.drive_id, window=w.index, start_time=w.start_time, end_time=w.end_time,
                     location=ref.location, clip_json=dumps(clip.slice(w.start_time, w.end_time).to_dict()),
                     metadata_json=meta_json,
                     track_json=json.dumps(clip.gps.track(w.start_time, w.end_time).tolist()))
                for w in windows]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["ref_id"])):
            record = batch["record"][i]
            ref = ClipRef(str(batch["ref_id"][i]), str(batch["location"][i]), str(batch["base_dir"][i]),
                          None if record is None or record == "" else str(record))
            rows.extend(self.ingest(ref))
        return {c: np.asarray([r[c] for r in rows], dtype=object if c not in ("window", "start_time", "end_time")
                              else (np.int64 if c == "window" else np.float64)) for c in COLUMNS}


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def ingest_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return IngestClips(config_json)(batch)
