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
from gaia2.curation.windows import Window, cut_windows, window_key
from gaia2.schema.clip import Clip, dumps
from gaia2.schema.errors import ClipError, Reason
from gaia2.video.decode import check_video
from pipelines.rejects import REJECT_COLUMNS, map_rows
from pipelines.shards.sources import ClipRef, read_record

COLUMNS = ("kind", "key", "clip_id", "drive_id", "window", "start_time", "end_time", "location", "clip_json",
           "metadata_json", "track_json", *REJECT_COLUMNS)


def _row(**values: Any) -> dict[str, Any]:
    row = {"kind": "", "key": "", "clip_id": "", "drive_id": "", "window": -1, "start_time": np.nan,
           "end_time": np.nan, "location": "", "clip_json": "", "metadata_json": "", "track_json": "",
           **dict.fromkeys(REJECT_COLUMNS, "")}
    row.update(values)
    return row


class IngestClips:
    """Callable Ray Data stage: ``ClipRef`` rows -> window rows and reject rows (stage "ingest")."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def windows(self, clip: Clip) -> list[Window]:
        """The clip's windows, once its cameras and videos pass the checks."""
        if len(clip.cameras) < self.cfg.ingest.min_cameras:
            raise ClipError(Reason.MISSING_CAMERA,
                            f"{len(clip.cameras)} cameras, at least {self.cfg.ingest.min_cameras} required")
        for cam in clip.cameras:
            check_video(cam.video, cam.name, len(cam.timestamps), self.cfg.ingest.decode_check)
        windows = cut_windows(clip, self.cfg.window.frames, self.cfg.window.hop, self.cfg.window.grid_hz)
        if not windows:
            raise ClipError(Reason.TOO_SHORT, f"shorter than one window of {self.cfg.window.frames} frames "
                                              f"on the frame grid")
        return windows

    def ingest(self, refs: list[ClipRef]) -> list[dict[str, Any]]:
        """One row per window of each clip, or a single reject row for a clip that cannot be used."""
        n = len(refs)
        # Read first, then check: a clip rejected by the checks is named by its record's clip_id.
        clips, rejects = map_rows(lambda i: read_record(refs[i]), n, "ingest", Reason.INVALID_RECORD, None)
        windows, rejects = map_rows(lambda i: self.windows(clips[i]), n, "ingest", Reason.INVALID_RECORD, [],
                                    rejects)
        rows: list[dict[str, Any]] = []
        for ref, clip, clip_windows, reject in zip(refs, clips, windows, rejects):
            if reject is not None:
                rows.append(_row(kind="reject", clip_id=clip.clip_id if clip else ref.ref_id, location=ref.location,
                                 **reject.columns()))
                continue
            meta_json = json.dumps(clip.metadata, sort_keys=True)
            # Each window carries its own slice of the record: later stages parse kilobytes, not the clip.
            rows.extend(_row(kind="window", key=window_key(clip.clip_id, w.index), clip_id=clip.clip_id,
                             drive_id=clip.drive_id, window=w.index, start_time=w.start_time, end_time=w.end_time,
                             location=ref.location, clip_json=dumps(clip.slice(w.start_time, w.end_time).to_dict()),
                             metadata_json=meta_json,
                             track_json=json.dumps(clip.gps.track(w.start_time, w.end_time).tolist()))
                        for w in clip_windows)
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        refs = [ClipRef(str(ref_id), str(location), str(base_dir), str(record) if record else None)
                for ref_id, location, base_dir, record in zip(batch["ref_id"], batch["location"], batch["base_dir"],
                                                              batch["record"])]
        rows = self.ingest(refs)
        return {c: np.asarray([r[c] for r in rows], dtype=object if c not in ("window", "start_time", "end_time")
                              else (np.int64 if c == "window" else np.float64)) for c in COLUMNS}


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def ingest_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return IngestClips(config_json)(batch)
