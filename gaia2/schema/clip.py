"""The ``Clip`` record: what every source yields and the shard pipeline consumes.

Conventions (fixed by the contract):
- Times are seconds on the drive's clock; ``start_time_s`` is the clip's start on that clock, so
  windows of different clips of one drive can be compared for the minimum-stride rule.
- Ego frame (ISO 8855): x forward, y left, z up, origin on the ground below the rear axle.
- Camera frame (OpenCV): x right, y down, z forward. ``extrinsics`` maps camera -> ego (4x4).
- Intrinsics are (fx, fy, cx, cy) in pixels of the native image; distortion is OpenCV's
  radial-tangential (k1, k2, p1, p2, k3) on normalised image coordinates.
- Ground-truth boxes are in the ego frame at their own timestamps: centre (x, y, z) of the box,
  size (l, w, h), yaw about z (0 = facing +x), category from ``AGENT_CATEGORIES``.

JSON form (``clip.json``; also the Parquet manifest row, nested):
    {"schema_version": 1, "clip_id", "drive_id", "rig_id", "start_time_s",
     "cameras": [{"name", "frame_rate", "timestamps", "width", "height",
                  "intrinsics", "extrinsics", "distortion", "video"}],
     "ego": {"timestamps", "speed", "curvature"},
     "gps": {"timestamps", "latitude", "longitude"},
     "metadata": {name: value},
     "boxes": {"timestamps", "frame_index", "center", "size", "yaw", "category"} | null}
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.metadata import AGENT_CATEGORIES, VocabularyError, encode_metadata

SCHEMA_VERSION = 1
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")   # ids become WebDataset keys: no dots, no slashes
DISTORTION_SIZE = 5


def _array(value: Any, name: str, ndim: int = 1, dtype=np.float64) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ClipError(Reason.INVALID_RECORD, f"{name}: not a numeric array ({err})") from None
    if arr.ndim != ndim:
        raise ClipError(Reason.INVALID_RECORD, f"{name}: expected {ndim}-d array, got shape {arr.shape}")
    return arr


def _check_increasing(ts: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(ts)):
        raise ClipError(Reason.TIMESTAMPS_NOT_INCREASING, f"{name}: non-finite timestamp")
    if ts.size > 1 and not np.all(np.diff(ts) > 0):
        bad = int(np.argmax(np.diff(ts) <= 0))
        raise ClipError(Reason.TIMESTAMPS_NOT_INCREASING,
                        f"{name}: timestamp {bad + 1} ({ts[bad + 1]:.6f}) not after {bad} ({ts[bad]:.6f})")


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d or d[key] is None:
        raise ClipError(Reason.INVALID_RECORD, f"{where}{key}: missing")
    return d[key]


def _series(d: Mapping[str, Any], section: str, names: tuple[str, ...], min_size: int) -> list[np.ndarray]:
    """The 1-d arrays ``d[name]`` of a time series record (ego, gps): equal lengths, at least ``min_size``."""
    arrays = [_array(_require(d, name, f"{section}."), f"{section}.{name}") for name in names]
    if len({a.shape for a in arrays}) != 1 or arrays[0].size < min_size:
        raise ClipError(Reason.INVALID_RECORD, f"{section}: {'/'.join(names)} lengths differ or < {min_size} "
                                               f"({', '.join(str(a.size) for a in arrays)})")
    return arrays


@dataclass(frozen=True)
class Camera:
    name: str
    frame_rate: float
    timestamps: np.ndarray      # (F,) seconds, strictly increasing
    width: int
    height: int
    intrinsics: np.ndarray      # (4,) fx, fy, cx, cy
    extrinsics: np.ndarray      # (4, 4) camera -> ego
    distortion: np.ndarray      # (5,) k1, k2, p1, p2, k3
    video: str                  # absolute path or URI

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | None) -> "Camera":
        name = str(_require(d, "name", "cameras[]."))
        where = f"cameras[{name}]."
        if not _ID_PATTERN.match(name):
            raise ClipError(Reason.INVALID_RECORD, f"{where}name: {name!r} must match {_ID_PATTERN.pattern}")
        try:
            intr = np.asarray(_require(d, "intrinsics", where), dtype=np.float64)
            extr = np.asarray(_require(d, "extrinsics", where), dtype=np.float64)
            dist = np.asarray(_require(d, "distortion", where), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}: calibration is not numeric ({err})") from None
        if intr.shape != (4,):
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}intrinsics: expected (fx, fy, cx, cy), got shape {intr.shape}")
        if extr.shape != (4, 4):
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}extrinsics: expected a 4x4 matrix, got shape {extr.shape}")
        if dist.shape != (DISTORTION_SIZE,):
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}distortion: expected {DISTORTION_SIZE} coefficients (k1, k2, p1, p2, k3), got shape {dist.shape}")
        if not (np.all(np.isfinite(intr)) and np.all(np.isfinite(extr)) and np.all(np.isfinite(dist))):
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}: non-finite calibration value")
        if intr[0] <= 0 or intr[1] <= 0:
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}intrinsics: focal lengths must be positive, got {intr[:2].tolist()}")
        if not np.allclose(extr[3], [0, 0, 0, 1]) or not np.allclose(extr[:3, :3] @ extr[:3, :3].T, np.eye(3), atol=1e-4):
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}extrinsics: not a rigid transform")
        ts = _array(_require(d, "timestamps", where), f"{where}timestamps")
        _check_increasing(ts, f"{where}timestamps")
        rate = float(_require(d, "frame_rate", where))
        width, height = int(_require(d, "width", where)), int(_require(d, "height", where))
        if not (rate > 0 and width > 0 and height > 0):
            raise ClipError(Reason.INVALID_RECORD, f"{where}: frame_rate, width and height must be positive")
        video = str(_require(d, "video", where))
        if base_dir is not None and "://" not in video and not os.path.isabs(video):
            video = os.path.normpath(os.path.join(base_dir, video))
        return cls(name, rate, ts, width, height, intr, extr, dist, video)

    def to_dict(self, base_dir: str | None = None) -> dict[str, Any]:
        video = self.video
        if base_dir is not None and "://" not in video:
            video = os.path.relpath(video, base_dir)
        return {"name": self.name, "frame_rate": self.frame_rate, "timestamps": self.timestamps.tolist(),
                "width": self.width, "height": self.height, "intrinsics": self.intrinsics.tolist(),
                "extrinsics": self.extrinsics.tolist(), "distortion": self.distortion.tolist(), "video": video}


@dataclass(frozen=True)
class Ego:
    timestamps: np.ndarray   # (E,)
    speed: np.ndarray        # (E,) m/s
    curvature: np.ndarray    # (E,) 1/m, positive = turning left

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Ego":
        ts, speed, curv = _series(d, "ego", ("timestamps", "speed", "curvature"), min_size=2)
        for name, arr in (("timestamps", ts), ("speed", speed), ("curvature", curv)):
            if not np.all(np.isfinite(arr)):
                raise ClipError(Reason.NAN_EGO, f"ego.{name}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
        _check_increasing(ts, "ego.timestamps")
        return cls(ts, speed, curv)

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": self.timestamps.tolist(), "speed": self.speed.tolist(), "curvature": self.curvature.tolist()}


@dataclass(frozen=True)
class Gps:
    timestamps: np.ndarray   # (G,)
    latitude: np.ndarray     # (G,) degrees
    longitude: np.ndarray    # (G,) degrees

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Gps":
        ts, lat, lon = _series(d, "gps", ("timestamps", "latitude", "longitude"), min_size=1)
        if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))) or np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 180):
            raise ClipError(Reason.NAN_GPS, "gps: non-finite or out-of-range latitude/longitude")
        _check_increasing(ts, "gps.timestamps")
        return cls(ts, lat, lon)

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": self.timestamps.tolist(), "latitude": self.latitude.tolist(), "longitude": self.longitude.tolist()}

    def track(self, t0: float, t1: float) -> np.ndarray:
        """(K, 2) [lon, lat] points covering [t0, t1]: interpolated ends plus the fixes between."""
        inside = (self.timestamps > t0) & (self.timestamps < t1)
        ends = [np.interp(t, self.timestamps, arr) for t in (t0, t1) for arr in (self.longitude, self.latitude)]
        pts = [(ends[0], ends[1]), *zip(self.longitude[inside], self.latitude[inside]), (ends[2], ends[3])]
        return np.asarray(pts, dtype=np.float64)


@dataclass(frozen=True)
class Boxes:
    """Ground-truth 3D boxes, flattened: box m belongs to timestamp ``timestamps[frame_index[m]]``."""
    timestamps: np.ndarray   # (K,)
    frame_index: np.ndarray  # (M,) int
    center: np.ndarray       # (M, 3) ego frame, metres
    size: np.ndarray         # (M, 3) l, w, h
    yaw: np.ndarray          # (M,) radians
    category: np.ndarray     # (M,) int ids into AGENT_CATEGORIES

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Boxes":
        ts = _array(_require(d, "timestamps", "boxes."), "boxes.timestamps")
        _check_increasing(ts, "boxes.timestamps")
        idx = _array(_require(d, "frame_index", "boxes."), "boxes.frame_index", dtype=np.int64)
        m = idx.size
        center = _array(d.get("center") or np.zeros((0, 3)), "boxes.center", ndim=2).reshape(m, 3) if m else np.zeros((0, 3))
        size = _array(d.get("size") or np.zeros((0, 3)), "boxes.size", ndim=2).reshape(m, 3) if m else np.zeros((0, 3))
        yaw = _array(_require(d, "yaw", "boxes."), "boxes.yaw")
        names = list(_require(d, "category", "boxes."))
        if not (yaw.size == len(names) == m) or (m and (idx.min() < 0 or idx.max() >= ts.size)):
            raise ClipError(Reason.INVALID_RECORD, "boxes: arrays of different lengths or frame_index out of range")
        unknown = sorted({n for n in names if n not in AGENT_CATEGORIES[1:]})
        if unknown:
            raise ClipError(Reason.UNKNOWN_METADATA, f"boxes.category: unknown value(s) {unknown}; allowed {list(AGENT_CATEGORIES[1:])}")
        if not (np.all(np.isfinite(center)) and np.all(np.isfinite(size)) and np.all(np.isfinite(yaw))):
            raise ClipError(Reason.INVALID_RECORD, "boxes: non-finite value")
        cat = np.asarray([AGENT_CATEGORIES.index(n) for n in names], dtype=np.int64)
        return cls(ts, idx, center, size, yaw, cat)

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": self.timestamps.tolist(), "frame_index": self.frame_index.tolist(),
                "center": self.center.tolist(), "size": self.size.tolist(), "yaw": self.yaw.tolist(),
                "category": [AGENT_CATEGORIES[c] for c in self.category]}

    def at(self, t: float) -> np.ndarray:
        """Boxes of the timestamp nearest ``t`` as (M_t, 8): centre(3), size(3), yaw, category id."""
        k = int(np.argmin(np.abs(self.timestamps - t)))
        sel = self.frame_index == k
        return np.concatenate([self.center[sel], self.size[sel], self.yaw[sel, None],
                               self.category[sel, None].astype(np.float64)], axis=1)


@dataclass(frozen=True)
class Clip:
    clip_id: str
    drive_id: str
    rig_id: str
    start_time_s: float
    cameras: tuple[Camera, ...]
    ego: Ego
    gps: Gps
    metadata: dict[str, str | None]
    metadata_ids: dict[str, int] = field(repr=False)
    boxes: Boxes | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | None = None) -> "Clip":
        """Parse and check a clip record; raises ``ClipError`` with the reject reason."""
        if not isinstance(d, Mapping):
            raise ClipError(Reason.INVALID_RECORD, f"clip record must be an object, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ClipError(Reason.INVALID_RECORD, f"schema_version {version!r} not supported (expected {SCHEMA_VERSION})")
        ids = {}
        for key in ("clip_id", "drive_id", "rig_id"):
            ids[key] = str(_require(d, key, ""))
            if not _ID_PATTERN.match(ids[key]):
                raise ClipError(Reason.INVALID_RECORD, f"{key}: {ids[key]!r} must match {_ID_PATTERN.pattern}")
        try:
            start = float(_require(d, "start_time_s", ""))
        except (TypeError, ValueError):
            raise ClipError(Reason.INVALID_RECORD, "start_time_s: not a number") from None
        if not math.isfinite(start):
            raise ClipError(Reason.INVALID_RECORD, "start_time_s: not finite")
        cams = _require(d, "cameras", "")
        if not isinstance(cams, (list, tuple)) or not cams:
            raise ClipError(Reason.MISSING_CAMERA, "cameras: empty or not a list")
        cameras = tuple(Camera.from_dict(c, base_dir) for c in cams)
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ClipError(Reason.INVALID_RECORD, f"cameras: duplicate names {names}")
        meta = d.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise ClipError(Reason.INVALID_RECORD, "metadata: must be an object")
        meta = {k: v for k, v in meta.items() if v is not None}   # absent and null both mean unknown
        try:
            meta_ids = encode_metadata(meta)
        except VocabularyError as err:
            raise ClipError(Reason.UNKNOWN_METADATA, str(err)) from None
        boxes = d.get("boxes")
        return cls(ids["clip_id"], ids["drive_id"], ids["rig_id"], start, cameras,
                   Ego.from_dict(_require(d, "ego", "")), Gps.from_dict(_require(d, "gps", "")),
                   meta, meta_ids, Boxes.from_dict(boxes) if boxes else None)

    @classmethod
    def from_json_file(cls, path: str) -> "Clip":
        try:
            with open(path, "rb") as f:
                d = json.loads(f.read())
        except (OSError, ValueError) as err:
            raise ClipError(Reason.INVALID_RECORD, f"{path}: cannot read clip record ({err})") from None
        return cls.from_dict(d, base_dir=os.path.dirname(os.path.abspath(path)))

    def to_dict(self, base_dir: str | None = None) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "clip_id": self.clip_id, "drive_id": self.drive_id,
                "rig_id": self.rig_id, "start_time_s": self.start_time_s,
                "cameras": [c.to_dict(base_dir) for c in self.cameras],
                "ego": self.ego.to_dict(), "gps": self.gps.to_dict(),
                "metadata": {k: v for k, v in self.metadata.items()},
                "boxes": self.boxes.to_dict() if self.boxes is not None else None}

    def slice(self, t0: float, t1: float, margin: float = 1.0) -> "Clip":
        """The clip with ego, GPS and boxes cut to [t0 - margin, t1 + margin].

        Cameras are kept whole (frame indices refer to the full videos). A window's stages carry this
        instead of the full record, whose boxes and ego samples grow with the clip's length.
        """
        lo, hi = t0 - margin, t1 + margin

        def keep(ts: np.ndarray) -> np.ndarray:
            inside = (ts >= lo) & (ts <= hi)
            # Keep the neighbours just outside too, so interpolation at the window ends is unchanged.
            idx = np.flatnonzero(inside)
            if idx.size == 0:
                idx = np.array([int(np.argmin(np.abs(ts - (t0 + t1) / 2)))])
            return np.arange(max(idx[0] - 1, 0), min(idx[-1] + 2, len(ts)))

        e, g = keep(self.ego.timestamps), keep(self.gps.timestamps)
        ego = Ego(self.ego.timestamps[e], self.ego.speed[e], self.ego.curvature[e])
        gps = Gps(self.gps.timestamps[g], self.gps.latitude[g], self.gps.longitude[g])
        boxes = self.boxes
        if boxes is not None:
            k = keep(boxes.timestamps)
            remap = np.full(len(boxes.timestamps), -1)
            remap[k] = np.arange(len(k))
            m = remap[boxes.frame_index] >= 0
            boxes = Boxes(boxes.timestamps[k], remap[boxes.frame_index[m]], boxes.center[m], boxes.size[m],
                          boxes.yaw[m], boxes.category[m])
        return Clip(self.clip_id, self.drive_id, self.rig_id, self.start_time_s, self.cameras, ego, gps,
                    self.metadata, self.metadata_ids, boxes)

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)


def dumps(record: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, no whitespace variance (same record -> same bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
