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
                  "intrinsics", "extrinsics", "distortion", "video" | "frames"}],
     "ego": {"timestamps", "speed", "curvature"},
     "gps": {"timestamps", "latitude", "longitude"},
     "metadata": {name: value},
     "boxes": {"timestamps", "frame_index", "center", "size", "yaw", "category"} | null}

A camera is a video file (``"video": "front.mp4"``) or an image per timestamp (``"frames": ["front/0.jpg",
...]``, JPEG or PNG, in the order of ``timestamps``, as nuScenes' ``samples/CAM_FRONT/*.jpg``): exactly one.

Parsing is strict, since every record is hostile until checked: a number is a finite JSON number (not
"20", not true, not NaN or Infinity), an integer is integral, an array is a rectangular array of numbers,
a key outside the form above is refused (``ingest.extra_keys``), null is the same as absent, and a video
or image path stays inside the record's directory (``ingest.allow_absolute_videos``). Each failure is a
``ClipError`` whose detail names the field (``cameras[front].width: expected a number, got string 'abc'``).
Given the shard build's ``IngestConfig``, values are also held to ``ingest.bounds`` and each camera's
declared rate to its timestamps (``ingest.tolerance``).
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from gaia2 import storage
from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.metadata import AGENT_CATEGORIES, VOCABULARY, VocabularyError, encode_metadata

if TYPE_CHECKING:
    from gaia2.config.shards import BoundsConfig, IngestConfig, ToleranceConfig

SCHEMA_VERSION = 1
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")   # ids become WebDataset keys: no dots, no slashes
DISTORTION_SIZE = 5

# The keys of each object of the record; anything else is rejected (``ingest.extra_keys``).
CLIP_KEYS = frozenset({"schema_version", "clip_id", "drive_id", "rig_id", "start_time_s", "cameras", "ego", "gps",
                       "metadata", "boxes"})
CAMERA_KEYS = frozenset({"name", "frame_rate", "timestamps", "width", "height", "intrinsics", "extrinsics",
                         "distortion", "video", "frames"})
EGO_KEYS = frozenset({"timestamps", "speed", "curvature"})
GPS_KEYS = frozenset({"timestamps", "latitude", "longitude"})
BOX_KEYS = frozenset({"timestamps", "frame_index", "center", "size", "yaw", "category"})

_INVALID = Reason.INVALID_RECORD
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxdict = 40, 40, 4, 4


@dataclass(frozen=True)
class Checks:
    """What a parse checks beyond the contract itself.

    ``bounds``/``tolerance`` None skip those checks (a record the pipeline wrote itself, such as the one
    ingest checked and passed on); the path policy applies only where a ``base_dir`` is given.
    """
    bounds: BoundsConfig | None = None
    tolerance: ToleranceConfig | None = None
    allow_absolute_videos: bool = False
    extra_keys: str = "reject"

    @classmethod
    def of(cls, ingest: IngestConfig | None) -> "Checks":
        if ingest is None:
            return cls()
        return cls(ingest.bounds, ingest.tolerance, ingest.allow_absolute_videos, ingest.extra_keys)


def _show(value: Any) -> str:
    """A short repr of a value from the record: a hostile one may be megabytes long."""
    return _SHOW.repr(value)


def _kind(value: Any) -> str:
    """The JSON kind of ``value``, for messages (a bool is not a number here, though Python says it is an int)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _object(value: Any, where: str, keys: frozenset[str], checks: Checks) -> Mapping[str, Any]:
    """``value`` as an object with no keys outside ``keys`` (unless ``ingest.extra_keys`` is ignore)."""
    if not isinstance(value, Mapping):
        raise ClipError(_INVALID, f"{where or 'record'}: expected an object, got {_kind(value)}")
    if checks.extra_keys == "reject":
        extra = sorted(str(k) for k, v in value.items() if k not in keys and v is not None)   # null = absent
        if extra:
            raise ClipError(_INVALID, f"{where or 'record'}: unknown key(s) {_show(extra)}; expected only "
                                      f"{sorted(keys)} (ingest.extra_keys: ignore passes them)")
    return value


def _field(d: Mapping[str, Any], key: str, where: str) -> Any:
    """A required value (absent and null are both missing)."""
    if d.get(key) is None:
        raise ClipError(_INVALID, f"{_path(where, key)}: missing")
    return d[key]


def _string(value: Any, where: str, bounds: BoundsConfig | None = None, pattern: re.Pattern | None = None,
            bound: str = "max_id_length") -> str:
    if not isinstance(value, str):
        raise ClipError(_INVALID, f"{where}: expected a string, got {_kind(value)} {_show(value)}")
    if bounds is not None and len(value) > getattr(bounds, bound):
        raise ClipError(Reason.OUT_OF_BOUNDS, f"{where}: {len(value)} characters, more than "
                                              f"ingest.bounds.{bound} = {getattr(bounds, bound)}")
    if pattern is not None and not pattern.fullmatch(value):   # match() would let "id\n" through ($)
        raise ClipError(_INVALID, f"{where}: {_show(value)} must match {pattern.pattern}")
    return value


def _number(value: Any, where: str) -> float:
    """A finite JSON number (not a string that looks like one, not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ClipError(_INVALID, f"{where}: expected a number, got {_kind(value)} {_show(value)}")
    try:
        x = float(value)
    except OverflowError:   # a JSON integer with hundreds of digits
        raise ClipError(_INVALID, f"{where}: {_show(value)} is too large for a number") from None
    if not math.isfinite(x):
        raise ClipError(_INVALID, f"{where}: not finite ({x})")
    return x


def _integer(value: Any, where: str) -> int:
    x = _number(value, where)
    if not x.is_integer():
        raise ClipError(_INVALID, f"{where}: expected an integer, got {_show(value)}")
    return int(x)


def _has_bool(values: Any, depth: int) -> bool:
    """Whether a rectangular nest of lists ``depth`` deep holds a boolean (flattened in C: records hold
    thousands of box values)."""
    for _ in range(depth - 1):
        values = chain.from_iterable(values)
    return bool in set(map(type, values))


def _array(value: Any, where: str, shape: tuple[int | None, ...] = (None,), max_len: int | None = None,
           bound: str = "", integer: bool = False, reason: Reason = _INVALID) -> np.ndarray:
    """A JSON array of numbers of ``shape`` (None: any length) as float64 (int64 if ``integer``).

    Strings, booleans, nulls and ragged nesting are refused; non-finite values pass (each caller has its
    reason for them). ``max_len`` (the bound ``ingest.bounds.<bound>``) is checked before any conversion.
    """
    if not isinstance(value, (list, tuple)):
        raise ClipError(reason, f"{where}: expected an array, got {_kind(value)} {_show(value)}")
    if max_len is not None and len(value) > max_len:
        raise ClipError(Reason.OUT_OF_BOUNDS, f"{where}: {len(value)} values, more than ingest.bounds.{bound} = {max_len}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ClipError(reason, f"{where}: not a rectangular array of numbers") from None
    if arr.size == 0 and shape[0] is None and None not in shape[1:]:
        arr = np.zeros((0, *shape[1:]))   # [] is an empty (0, 3) too
    if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ClipError(reason, f"{where}: expected shape {want}, got {arr.shape}")
    # kind 'b' (all booleans), 'U' (strings), 'O' (nulls, objects, integers too large for int64) are refused;
    # booleans mixed with numbers become numbers in numpy, so they are looked for.
    if arr.dtype.kind not in "iuf" or _has_bool(value, arr.ndim):
        raise ClipError(reason, f"{where}: expected numbers only, got {_show(value)}")
    arr = arr.astype(np.float64)
    if not integer:
        return arr
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(np.abs(arr) > 2**53):
        raise ClipError(reason, f"{where}: expected integers, got {_show(value)}")
    return arr.astype(np.int64)


def _within(value: float, where: str, bounds: BoundsConfig | None, lo: str | None = None, hi: str | None = None,
            what: str = "") -> None:
    """``value`` inside [``bounds.<lo>``, ``bounds.<hi>``] (either end optional); no bounds, no check."""
    if bounds is None:
        return
    if lo is not None and value < getattr(bounds, lo):
        raise ClipError(Reason.OUT_OF_BOUNDS, f"{where}: {what}{value:g} below ingest.bounds.{lo} = {getattr(bounds, lo)}")
    if hi is not None and value > getattr(bounds, hi):
        raise ClipError(Reason.OUT_OF_BOUNDS, f"{where}: {what}{value:g} above ingest.bounds.{hi} = {getattr(bounds, hi)}")


def _norm(points: np.ndarray) -> float:
    """Largest Euclidean norm of (..., 3) finite points; inf where squaring overflows (a value of 1e300)."""
    with np.errstate(over="ignore"):
        return float(np.max(np.linalg.norm(points, axis=-1)))


def _check_increasing(ts: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(ts)):
        raise ClipError(Reason.TIMESTAMPS_NOT_INCREASING, f"{name}: non-finite timestamp")
    if ts.size > 1 and not np.all(np.diff(ts) > 0):
        bad = int(np.argmax(np.diff(ts) <= 0))
        raise ClipError(Reason.TIMESTAMPS_NOT_INCREASING,
                        f"{name}: timestamp {bad + 1} ({ts[bad + 1]:.6f}) not after {bad} ({ts[bad]:.6f})")


def _check_times(ts: np.ndarray, where: str, checks: Checks) -> np.ndarray:
    """``ts`` strictly increasing, its values and span inside ``ingest.bounds``."""
    _check_increasing(ts, where)
    if ts.size:
        _within(float(np.max(np.abs(ts))), where, checks.bounds, hi="max_abs_time_s", what="|time| ")
        _within(float(ts[-1] - ts[0]), where, checks.bounds, hi="max_duration_s", what="span (s) ")
    return ts


def _times(value: Any, where: str, checks: Checks, bound: str = "max_series_length", min_size: int = 0) -> np.ndarray:
    """A series of times on the drive clock (``_check_times``), its length within ``ingest.bounds.<bound>``."""
    b = checks.bounds
    ts = _array(value, where, max_len=getattr(b, bound) if b is not None else None, bound=bound)
    if ts.size < min_size:
        raise ClipError(_INVALID, f"{where}: {ts.size} value(s), at least {min_size} required")
    return _check_times(ts, where, checks)


def _series(d: Mapping[str, Any], section: str, names: tuple[str, ...], min_size: int,
            checks: Checks) -> list[np.ndarray]:
    """The 1-d arrays ``d[name]`` of a time series record (ego, gps): equal lengths, at least ``min_size``."""
    b = checks.bounds
    limit = b.max_series_length if b is not None else None
    arrays = [_array(_field(d, name, section), f"{section}.{name}", max_len=limit, bound="max_series_length")
              for name in names]
    if len({a.shape for a in arrays}) != 1 or arrays[0].size < min_size:
        raise ClipError(_INVALID, f"{section}: {'/'.join(names)} lengths differ or < {min_size} "
                                  f"({', '.join(str(a.size) for a in arrays)})")
    return arrays


def _video(value: Any, where: str, base_dir: str | None, checks: Checks) -> str:
    """A video's (or image's) location: a relative path resolved under ``base_dir``, never outside it unless
    allowed."""
    video = _string(value, where)
    if not video or any(ord(c) < 32 for c in video):
        raise ClipError(_INVALID, f"{where}: {_show(video)} is not a usable path")
    if base_dir is None:   # a record the pipeline wrote itself: already resolved
        return video
    if storage.is_uri(video) or video.startswith("file://") or os.path.isabs(video):
        if checks.allow_absolute_videos:
            return video
        raise ClipError(Reason.VIDEO_PATH_OUTSIDE_SOURCE,
                        f"{where}: {_show(storage.redact(video))} is absolute or a URI; a video must be a path "
                        f"relative to the clip's directory (ingest.allow_absolute_videos allows it)")
    try:
        return storage.child(base_dir, video)
    except ValueError:
        raise ClipError(Reason.VIDEO_PATH_OUTSIDE_SOURCE,
                        f"{where}: {_show(video)} climbs out of the clip's directory "
                        f"{storage.redact(base_dir)}") from None


def _frames(value: Any, where: str, count: int, base_dir: str | None, checks: Checks) -> tuple[str, ...]:
    """An image camera's files: one per timestamp (``count``), each under the path policy of a video."""
    if not isinstance(value, (list, tuple)):
        raise ClipError(_INVALID, f"{where}: expected an array of strings, got {_kind(value)} {_show(value)}")
    b = checks.bounds
    if b is not None and len(value) > b.max_frames_per_camera:   # before touching each entry
        raise ClipError(Reason.OUT_OF_BOUNDS, f"{where}: {len(value)} values, more than "
                                              f"ingest.bounds.max_frames_per_camera = {b.max_frames_per_camera}")
    if len(value) != count:
        raise ClipError(Reason.FRAME_COUNT_MISMATCH, f"{where}: {len(value)} images, {count} timestamps declared "
                                                     f"(one image per timestamp)")
    return tuple(_video(v, f"{where}[{i}]", base_dir, checks) for i, v in enumerate(value))


def _relative(location: str, base_dir: str | None) -> str:
    """A local ``location`` inside ``base_dir`` relative to it; anything else as it is."""
    if base_dir is None or storage.is_uri(location) or storage.is_uri(base_dir):
        return location
    rel = os.path.relpath(location, base_dir)
    return location if rel == ".." or rel.startswith(".." + os.sep) else rel


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
    video: str | None           # absolute path or URI; None for an image camera
    frames: tuple[str, ...] | None = None   # (F,) absolute paths or URIs of an image camera, one per timestamp

    def __post_init__(self) -> None:
        if (self.video is None) == (self.frames is None):
            raise ValueError(f"camera {self.name!r}: exactly one of video or frames")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | None, checks: Checks = Checks(),
                  index: int = 0) -> "Camera":
        """Parse camera ``index`` of a record; ``base_dir`` resolves relative video and image paths (None: taken
        as is)."""
        b, tol = checks.bounds, checks.tolerance
        d = _object(d, f"cameras[{index}]", CAMERA_KEYS, checks)
        name = _string(_field(d, "name", f"cameras[{index}]"), f"cameras[{index}].name", b, _ID_PATTERN)
        where = f"cameras[{name}]"
        if (d.get("video") is None) == (d.get("frames") is None):
            given = "both" if d.get("video") is not None else "neither"
            raise ClipError(_INVALID, f"{where}: exactly one of video or frames, got {given}")
        video = None if d.get("video") is None else _video(d["video"], f"{where}.video", base_dir, checks)
        rate = _number(_field(d, "frame_rate", where), f"{where}.frame_rate")
        width = _integer(_field(d, "width", where), f"{where}.width")
        height = _integer(_field(d, "height", where), f"{where}.height")
        for key, value in (("frame_rate", rate), ("width", width), ("height", height)):
            if value <= 0:
                raise ClipError(_INVALID, f"{where}.{key}: must be positive, got {value:g}")
        _within(rate, f"{where}.frame_rate", b, "min_frame_rate", "max_frame_rate")
        _within(width, f"{where}.width", b, "min_width", "max_width")
        _within(height, f"{where}.height", b, "min_height", "max_height")
        ts = _times(_field(d, "timestamps", where), f"{where}.timestamps", checks, "max_frames_per_camera", 1)
        frames = None if video is not None else _frames(d["frames"], f"{where}.frames", ts.size, base_dir, checks)
        if tol is not None and ts.size > 1:
            # The median spacing ignores dropped frames and jitter; a declared rate far from it is a lie
            # that would resample every window of this camera onto the wrong grid.
            implied = 1.0 / float(np.median(np.diff(ts)))
            if abs(rate / implied - 1) > tol.frame_rate:
                raise ClipError(Reason.FRAME_RATE_MISMATCH,
                                f"{where}.frame_rate: declared {rate:g} Hz, its timestamps are {implied:.4g} Hz "
                                f"(median spacing); more than ingest.tolerance.frame_rate = {tol.frame_rate:g} apart")
        calib = Reason.BAD_CALIBRATION
        intr = _array(_field(d, "intrinsics", where), f"{where}.intrinsics", (4,), reason=calib)
        extr = _array(_field(d, "extrinsics", where), f"{where}.extrinsics", (4, 4), reason=calib)
        dist = _array(_field(d, "distortion", where), f"{where}.distortion", (DISTORTION_SIZE,), reason=calib)
        for key, arr in (("intrinsics", intr), ("extrinsics", extr), ("distortion", dist)):
            if not np.all(np.isfinite(arr)):
                raise ClipError(calib, f"{where}.{key}: non-finite value")
        if intr[0] <= 0 or intr[1] <= 0:
            raise ClipError(calib, f"{where}.intrinsics: focal lengths must be positive, got {intr[:2].tolist()}")
        if not (0 <= intr[2] <= width and 0 <= intr[3] <= height):
            raise ClipError(calib, f"{where}.intrinsics: principal point {intr[2:].tolist()} outside the "
                                   f"{width}x{height} image")
        with np.errstate(over="ignore", invalid="ignore"):   # 1e300 entries: inf, then not rigid
            rigid = np.allclose(extr[3], [0, 0, 0, 1]) and np.allclose(extr[:3, :3] @ extr[:3, :3].T, np.eye(3), atol=1e-4)
        if not rigid:
            raise ClipError(calib, f"{where}.extrinsics: not a rigid transform")
        _within(_norm(extr[:3, 3]), f"{where}.extrinsics", b, hi="max_camera_offset_m", what="camera offset (m) ")
        return cls(name, rate, ts, width, height, intr, extr, dist, video, frames)

    def to_dict(self, base_dir: str | None = None) -> dict[str, Any]:
        """The JSON form; with ``base_dir``, a local video or image inside it is written relative to it (one
        outside stays absolute: reading it back then needs ``ingest.allow_absolute_videos``). A video camera
        has no ``frames`` key, not even null: its windows' records, hence the shards, stay as they were."""
        d = {"name": self.name, "frame_rate": self.frame_rate, "timestamps": self.timestamps.tolist(),
             "width": self.width, "height": self.height, "intrinsics": self.intrinsics.tolist(),
             "extrinsics": self.extrinsics.tolist(), "distortion": self.distortion.tolist()}
        if self.frames is not None:
            return d | {"frames": [_relative(f, base_dir) for f in self.frames]}
        return d | {"video": _relative(self.video, base_dir)}


@dataclass(frozen=True)
class Ego:
    timestamps: np.ndarray   # (E,)
    speed: np.ndarray        # (E,) m/s
    curvature: np.ndarray    # (E,) 1/m, positive = turning left

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], checks: Checks = Checks()) -> "Ego":
        d = _object(d, "ego", EGO_KEYS, checks)
        ts, speed, curv = _series(d, "ego", ("timestamps", "speed", "curvature"), 2, checks)
        for name, arr in (("timestamps", ts), ("speed", speed), ("curvature", curv)):
            if not np.all(np.isfinite(arr)):
                raise ClipError(Reason.NAN_EGO, f"ego.{name}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
        _check_times(ts, "ego.timestamps", checks)
        _within(float(np.max(np.abs(speed))), "ego.speed", checks.bounds, hi="max_speed_mps", what="|speed| ")
        _within(float(np.max(np.abs(curv))), "ego.curvature", checks.bounds, hi="max_abs_curvature", what="|curvature| ")
        return cls(ts, speed, curv)

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": self.timestamps.tolist(), "speed": self.speed.tolist(), "curvature": self.curvature.tolist()}


@dataclass(frozen=True)
class Gps:
    timestamps: np.ndarray   # (G,)
    latitude: np.ndarray     # (G,) degrees
    longitude: np.ndarray    # (G,) degrees

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], checks: Checks = Checks()) -> "Gps":
        d = _object(d, "gps", GPS_KEYS, checks)
        ts, lat, lon = _series(d, "gps", ("timestamps", "latitude", "longitude"), 1, checks)
        for name, arr, limit in (("latitude", lat, 90), ("longitude", lon, 180)):
            if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > limit):
                raise ClipError(Reason.NAN_GPS, f"gps.{name}: non-finite or beyond +-{limit} degrees")
        _check_times(ts, "gps.timestamps", checks)
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
    def from_dict(cls, d: Mapping[str, Any], checks: Checks = Checks()) -> "Boxes":
        b = checks.bounds
        d = _object(d, "boxes", BOX_KEYS, checks)
        ts = _times(_field(d, "timestamps", "boxes"), "boxes.timestamps", checks)
        limit = b.max_boxes if b is not None else None
        idx = _array(_field(d, "frame_index", "boxes"), "boxes.frame_index", max_len=limit, bound="max_boxes",
                     integer=True)
        m = idx.size
        arrays = {"frame_index": idx}
        for key, shape in (("center", (None, 3)), ("size", (None, 3)), ("yaw", (None,))):
            arrays[key] = _array(_field(d, key, "boxes"), f"boxes.{key}", shape, max_len=limit, bound="max_boxes")
        names = _field(d, "category", "boxes")
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ClipError(_INVALID, f"boxes.category: expected an array of strings, got {_show(names)}")
        sizes = {key: len(arr) for key, arr in arrays.items()} | {"category": len(names)}
        if len(set(sizes.values())) != 1:
            raise ClipError(_INVALID, f"boxes: one entry per box expected in each array, got lengths {sizes}")
        if m and (idx.min() < 0 or idx.max() >= ts.size):
            raise ClipError(_INVALID, f"boxes.frame_index: values must lie in [0, {ts.size}) (one per "
                                      f"boxes.timestamps), got {int(idx.min())}..{int(idx.max())}")
        center, size, yaw = arrays["center"], arrays["size"], arrays["yaw"]
        for key, arr in (("center", center), ("size", size), ("yaw", yaw)):
            if not np.all(np.isfinite(arr)):
                raise ClipError(_INVALID, f"boxes.{key}: non-finite value")
        if m and size.min() < 0:
            raise ClipError(_INVALID, f"boxes.size: negative box side {size.min():g}")
        if m:
            _within(float(size.max()), "boxes.size", b, hi="max_box_size_m", what="box side (m) ")
            _within(_norm(center), "boxes.center", b, hi="max_box_distance_m", what="distance (m) ")
        unknown = sorted({n for n in names if n not in AGENT_CATEGORIES[1:]})
        if unknown:
            raise ClipError(Reason.UNKNOWN_METADATA, f"boxes.category: unknown value(s) {_show(unknown)}; "
                                                     f"allowed {list(AGENT_CATEGORIES[1:])}")
        cat = np.asarray([AGENT_CATEGORIES.index(n) for n in names], dtype=np.int64)
        return cls(ts, idx, center, size, yaw, cat)

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": self.timestamps.tolist(), "frame_index": self.frame_index.tolist(),
                "center": self.center.tolist(), "size": self.size.tolist(), "yaw": self.yaw.tolist(),
                "category": [AGENT_CATEGORIES[c] for c in self.category]}

    def at(self, t: float) -> np.ndarray:
        """Boxes of the timestamp nearest ``t`` as (M_t, 8): centre(3), size(3), yaw, category id."""
        return self.at_times(np.asarray([t], dtype=np.float64))[0]

    def nearest(self, times: np.ndarray) -> np.ndarray:
        """For each of ``times``, the index of the nearest of ``timestamps`` (ties to the earlier one)."""
        return np.argmin(np.abs(self.timestamps[None, :] - np.asarray(times, dtype=np.float64)[:, None]), axis=1)

    def at_times(self, times: np.ndarray) -> list[np.ndarray]:
        """``at(t)`` for each of ``times``: the boxes are grouped by timestamp once, not searched per time."""
        table = np.concatenate([self.center, self.size, self.yaw[:, None],
                                self.category[:, None].astype(np.float64)], axis=1)   # (M, 8)
        order = np.argsort(self.frame_index, kind="stable")    # by timestamp, in record order within one
        bounds = np.searchsorted(self.frame_index[order], np.arange(len(self.timestamps) + 1))
        return [table[order[bounds[k]:bounds[k + 1]]] for k in self.nearest(times).tolist()]


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
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | None = None,
                  ingest: IngestConfig | None = None) -> "Clip":
        """Parse and check a clip record; raises ``ClipError`` with the reject reason, naming the field.

        ``base_dir``: where relative video paths resolve (a path or URI); a video may not leave it unless
        ``ingest.allow_absolute_videos``. None: a record the pipeline wrote itself, videos taken as they are.
        ``ingest``: the bounds, tolerances and key policy of the shard build; None checks only the contract.
        """
        checks = Checks.of(ingest)
        b = checks.bounds
        d = _object(d, "", CLIP_KEYS, checks)
        version = d.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise ClipError(_INVALID, f"schema_version: {_show(version)} not supported (expected {SCHEMA_VERSION})")
        ids = {key: _string(_field(d, key, ""), key, b, _ID_PATTERN) for key in ("clip_id", "drive_id", "rig_id")}
        start = _number(_field(d, "start_time_s", ""), "start_time_s")
        _within(abs(start), "start_time_s", b, hi="max_abs_time_s", what="|time| ")
        cams = _field(d, "cameras", "")
        if not isinstance(cams, (list, tuple)) or not cams:
            raise ClipError(Reason.MISSING_CAMERA, f"cameras: empty or not an array ({_kind(cams)})")
        if b is not None and len(cams) > b.max_cameras:
            raise ClipError(Reason.OUT_OF_BOUNDS, f"cameras: {len(cams)} cameras, more than "
                                                  f"ingest.bounds.max_cameras = {b.max_cameras}")
        cameras = tuple(Camera.from_dict(c, base_dir, checks, i) for i, c in enumerate(cams))
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ClipError(_INVALID, f"cameras: duplicate names {names}")
        meta = d.get("metadata")
        meta = {} if meta is None else meta
        if not isinstance(meta, Mapping):
            raise ClipError(_INVALID, f"metadata: expected an object, got {_kind(meta)}")
        meta = {k: v for k, v in meta.items() if v is not None}   # absent and null both mean unknown
        for k, v in meta.items():
            if k in VOCABULARY:   # an unknown name is the vocabulary's to report
                _string(v, f"metadata.{k}", b, bound="max_metadata_length")
        try:
            meta_ids = encode_metadata(meta)
        except VocabularyError as err:
            raise ClipError(Reason.UNKNOWN_METADATA, str(err)) from None
        ego = Ego.from_dict(_field(d, "ego", ""), checks)
        gps = Gps.from_dict(_field(d, "gps", ""), checks)
        boxes = d.get("boxes")
        return cls(ids["clip_id"], ids["drive_id"], ids["rig_id"], start, cameras, ego, gps, meta, meta_ids,
                   None if boxes is None else Boxes.from_dict(boxes, checks))

    @classmethod
    def from_json_file(cls, location: str, ingest: IngestConfig | None = None) -> "Clip":
        """Read and parse a ``clip.json`` (a path or URI); its directory is the record's ``base_dir``."""
        try:
            if ingest is not None:   # refuse a huge record before reading it into memory
                n = storage.size(location)
                _within((n or 0) / 2**20, "record", ingest.bounds, hi="max_record_mb", what="size (MiB) ")
            d = json.loads(storage.read_bytes(location))
        except (OSError, ValueError, RecursionError) as err:
            if isinstance(err, ClipError):
                raise
            raise ClipError(_INVALID, f"{storage.redact(location)}: cannot read clip record "
                                      f"({type(err).__name__}: {err})") from None
        return cls.from_dict(d, base_dir=storage.dirname(location), ingest=ingest)

    def to_dict(self, base_dir: str | None = None) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "clip_id": self.clip_id, "drive_id": self.drive_id,
                "rig_id": self.rig_id, "start_time_s": self.start_time_s,
                "cameras": [c.to_dict(base_dir) for c in self.cameras],
                "ego": self.ego.to_dict(), "gps": self.gps.to_dict(),
                "metadata": {k: v for k, v in self.metadata.items()},
                "boxes": self.boxes.to_dict() if self.boxes is not None else None}

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)


def dumps(record: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, no whitespace variance (same record -> same bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
