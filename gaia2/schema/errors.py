"""Reasons a clip or window does not make it into the shards.

Each reason is a stable string: it is a column of ``rejects.parquet`` that data engineers filter on.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # Bad input: the clip (or one of its windows) cannot be used.
    INVALID_RECORD = "invalid_record"            # clip.json/manifest row unreadable or missing fields
    MISSING_CAMERA = "missing_camera"            # a camera's video file absent, or too few cameras
    EMPTY_VIDEO = "empty_video"                  # zero-byte video file
    UNREADABLE_VIDEO = "unreadable_video"        # the decoder cannot open the file
    TRUNCATED_VIDEO = "truncated_video"          # opens, but frames past some point cannot be decoded
    FRAME_COUNT_MISMATCH = "frame_count_mismatch"  # fewer decodable frames than timestamps declared
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

    @property
    def is_bad_input(self) -> bool:
        return self not in (Reason.NOT_SELECTED_STRIDE, Reason.NOT_SELECTED_BALANCE)


class ClipError(ValueError):
    """A clip that fails its contract; carries the reject reason and a human-readable detail."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
