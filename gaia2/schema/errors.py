"""Reasons a clip or window does not make it into the shards.

Each reason is a stable string: it is a column of ``rejects.parquet`` that data engineers filter on.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # Bad input: the clip (or one of its windows) cannot be used.
    INVALID_RECORD = "invalid_record"            # clip.json/manifest row unreadable, a field missing, of the
                                                 # wrong type, non-finite or unknown (ingest.extra_keys)
    OUT_OF_BOUNDS = "out_of_bounds"              # a value outside ingest.bounds (the detail names the bound)
    DUPLICATE_CLIP_ID = "duplicate_clip_id"      # another record of the source, earlier in source order, has the id
    VIDEO_PATH_OUTSIDE_SOURCE = "video_path_outside_source"  # absolute, a URI or climbing out with '..'
                                                 # (ingest.allow_absolute_videos)
    MISSING_CAMERA = "missing_camera"            # a camera's video file absent, or too few cameras
    EMPTY_VIDEO = "empty_video"                  # zero-byte video file
    UNREADABLE_VIDEO = "unreadable_video"        # the decoder cannot open the file
    TRUNCATED_VIDEO = "truncated_video"          # opens, but frames past some point cannot be decoded
    FRAME_COUNT_MISMATCH = "frame_count_mismatch"  # the video's frames differ from the timestamps declared
    RESOLUTION_MISMATCH = "resolution_mismatch"  # the decoded frame's size is not the declared width x height
    FRAME_RATE_MISMATCH = "frame_rate_mismatch"  # declared frame_rate vs the timestamps' spacing or the container
    TIMESTAMPS_NOT_INCREASING = "timestamps_not_increasing"
    NAN_EGO = "nan_ego"                          # NaN/inf in ego speed, curvature or timestamps
    NAN_GPS = "nan_gps"
    UNKNOWN_METADATA = "unknown_metadata"        # a value outside the versioned vocabulary
    BAD_CALIBRATION = "bad_calibration"          # intrinsics/extrinsics/distortion of the wrong shape
    TOO_SHORT = "too_short"                      # shorter than one window on the frame grid
    DECODE_FAILED = "decode_failed"              # a window failed while decoding/processing its frames
    # Good input, deliberately left out.
    NOT_SELECTED_STRIDE = "not_selected_stride"  # within the minimum temporal stride of a kept window
    NOT_SELECTED_BALANCE = "not_selected_balance"  # down-sampled: its metadata cell is over-represented
    NOT_SELECTED_SPLIT = "not_selected_split"    # split.kind official: its clip is in neither list (e.g. test)

    @property
    def is_bad_input(self) -> bool:
        return self not in (Reason.NOT_SELECTED_STRIDE, Reason.NOT_SELECTED_BALANCE, Reason.NOT_SELECTED_SPLIT)


MAX_DETAIL = 1000   # characters: a hostile value must not turn one rejects row into megabytes


class ClipError(ValueError):
    """A clip that fails its contract; carries the reject reason and a human-readable detail."""

    def __init__(self, reason: Reason, detail: str):
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL - 3] + "..."
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
