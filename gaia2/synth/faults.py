"""A bad-input set: copies of a good clip, each broken in one of the ways ingest must catch.

``gaia2 synth --faults`` writes them beside the good clips, so one build shows every reject reason;
tests use them the same way. Clip ids are rewritten (``bad-<kind>``) so they sit beside the good ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np

from gaia2.schema.errors import Reason


def _copy(src_root: str, src_id: str, dst_root: str, dst_id: str) -> tuple[str, dict]:
    dst = os.path.join(dst_root, dst_id)
    shutil.copytree(os.path.join(src_root, src_id), dst)
    with open(os.path.join(dst, "clip.json")) as f:
        record = json.load(f)
    record["clip_id"] = dst_id
    return dst, record


def _save(dst: str, record: dict) -> None:
    with open(os.path.join(dst, "clip.json"), "w") as f:
        json.dump(record, f)   # allow_nan: a NaN must reach the validator as NaN


def make_bad_clips(src_root: str, dst_root: str, short_clip: tuple[dict, dict[str, bytes]]) -> dict[str, str]:
    """Copy the first clip of ``src_root`` into broken variants under ``dst_root``.

    ``short_clip`` is a (record, videos) pair shorter than one window (``generate_clip`` with a small
    duration). Returns {clip_id: the reject reason ingest must give it}.
    """
    good = sorted(d for d in os.listdir(src_root) if os.path.isdir(os.path.join(src_root, d))
                  and not d.startswith("bad-"))
    src = good[0]
    expected: dict[str, str] = {}

    def video(record: dict, i: int = 0) -> str:
        return record["cameras"][i]["video"]

    dst, rec = _copy(src_root, src, dst_root, "bad-unreadable")
    with open(os.path.join(dst, video(rec)), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _save(dst, rec)
    expected["bad-unreadable"] = Reason.UNREADABLE_VIDEO

    dst, rec = _copy(src_root, src, dst_root, "bad-truncated")
    path = os.path.join(dst, video(rec, 1))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) * 2 // 3])
    _save(dst, rec)
    expected["bad-truncated"] = Reason.TRUNCATED_VIDEO

    dst, rec = _copy(src_root, src, dst_root, "bad-zero-byte")
    open(os.path.join(dst, video(rec, 2)), "wb").close()
    _save(dst, rec)
    expected["bad-zero-byte"] = Reason.EMPTY_VIDEO

    dst, rec = _copy(src_root, src, dst_root, "bad-missing-camera")
    os.remove(os.path.join(dst, video(rec, 0)))
    _save(dst, rec)
    expected["bad-missing-camera"] = Reason.MISSING_CAMERA

    dst, rec = _copy(src_root, src, dst_root, "bad-few-frames")
    cam = rec["cameras"][0]
    step = 1.0 / cam["frame_rate"]
    cam["timestamps"] += [cam["timestamps"][-1] + step * (i + 1) for i in range(5)]   # declares 5 more
    _save(dst, rec)
    expected["bad-few-frames"] = Reason.FRAME_COUNT_MISMATCH

    dst, rec = _copy(src_root, src, dst_root, "bad-timestamps")
    ts = rec["cameras"][1]["timestamps"]
    ts[10], ts[11] = ts[11], ts[10]
    _save(dst, rec)
    expected["bad-timestamps"] = Reason.TIMESTAMPS_NOT_INCREASING

    dst, rec = _copy(src_root, src, dst_root, "bad-nan-ego")
    rec["ego"]["speed"][7] = math.nan
    _save(dst, rec)
    expected["bad-nan-ego"] = Reason.NAN_EGO

    dst, rec = _copy(src_root, src, dst_root, "bad-metadata")
    rec["metadata"]["weather"] = "sandstorm"
    _save(dst, rec)
    expected["bad-metadata"] = Reason.UNKNOWN_METADATA

    dst, rec = _copy(src_root, src, dst_root, "bad-calibration")
    rec["cameras"][0]["intrinsics"] = rec["cameras"][0]["intrinsics"][:3]
    _save(dst, rec)
    expected["bad-calibration"] = Reason.BAD_CALIBRATION

    record, videos = short_clip
    dst = os.path.join(dst_root, "bad-short")
    os.makedirs(dst)
    record = dict(record, clip_id="bad-short")
    for cam in record["cameras"]:
        with open(os.path.join(dst, cam["video"]), "wb") as f:
            f.write(videos[cam["name"]])
    _save(dst, record)
    expected["bad-short"] = Reason.TOO_SHORT

    dst = os.path.join(dst_root, "bad-no-record")
    os.makedirs(dst)
    open(os.path.join(dst, "clip.json"), "w").write("{not json")
    expected["bad-no-record"] = Reason.INVALID_RECORD
    return {k: v.value for k, v in expected.items()}
