"""A nuScenes scene -> a clip record (``gaia2.schema.clip``), from its bundle (``gaia2.datasets.nuscenes_tables``).

What comes from where:
- ``clip_id`` the scene's name (``scene-0061``), ``drive_id`` the log file (characters outside
  ``[A-Za-z0-9_-]`` become ``_``), ``rig_id`` ``nuscenes-<vehicle>``.
- Clock: Unix seconds (``timestamp / 1e6``), shared by every scene of a log, so the minimum stride between
  windows of one drive holds across its scenes.
- Cameras: the six ``CAM_*`` channels in surround order, each as recorded: its sample_data from the keyframe
  of the scene's first sample, following ``next`` (about 12 Hz, its own timestamps: the rig is not
  synchronous); frames are the image files (``sample_data.filename``, relative to the dataset root);
  calibration from ``calibrated_sensor`` (rotation as quaternion w, x, y, z; ``camera_intrinsic``); distortion
  zero (nuScenes images are undistorted); ``frame_rate`` 1 / the median spacing.
- Ego: successive ego poses of LIDAR_TOP (20 Hz; a scene without it uses its first camera's). Between two
  poses: heading change theta, chord c, arc length s = c (theta/2) / sin(theta/2) (the circular arc through
  both), speed = s / dt (negative when moving backwards), curvature = theta / s (positive = left; 0 below
  ``MIN_ARC_M`` of travel, where the heading's noise is all there is); at the midpoint time.
- GPS: the same poses from the map origin of the log's location (``LOCATIONS``: the devkit's
  ``scripts/export_poses.py`` reference coordinates and great-circle destination, bearing = atan2(x, y)
  clockwise from north; the devkit's atan(x / y) is the same for its maps' positive quadrant).
- Boxes: at every camera timestamp, what the devkit's ``NuScenes.get_boxes`` gives for that sample_data (the
  annotations of its sample; unless it is a keyframe or its sample the scene's first, each instance also
  annotated in the previous sample is interpolated: centre linearly, rotation by slerp, the time clamped to
  the two samples), then moved into the ego frame at that frame's own ego pose, as ``get_sample_data`` does;
  size (w, l, h) -> (l, w, h); category through ``CATEGORY_MAP`` (the rest dropped and counted in the build
  report).
- Metadata: country from the location (``SG`` is vocabulary v2); ``time_of_day`` night and ``weather`` rain
  where the scene's description says so ("after rain" is not rain); everything else unknown.

Every problem is a ``ClipError`` naming the table and token (the scene's reject), never another exception.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from gaia2.datasets.nuscenes_tables import EGO_CHANNEL
from gaia2.schema.errors import ClipError, Reason

CAMERA_ORDER = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT")
MIN_ARC_M = 0.05

# location -> (country, map origin latitude, longitude): nuscenes-devkit scripts/export_poses.py
LOCATIONS = {
    "boston-seaport": ("US", 42.336849169438615, -71.05785369873047),
    "singapore-onenorth": ("SG", 1.2882100868743724, 103.78475189208984),
    "singapore-hollandvillage": ("SG", 1.2993652317780957, 103.78217697143555),
    "singapore-queenstown": ("SG", 1.2782562240223188, 103.76741409301758),
}
EARTH_RADIUS_M = 6.378137e6   # the devkit's

# nuScenes category -> ours (gaia2.schema.metadata.AGENT_CATEGORIES). Trucks, trailers, construction vehicles
# and ambulances are the large non-bus vehicles: "van". A bicycle or motorcycle is a cyclist with a rider.
CATEGORY_MAP = {
    "vehicle.car": "car", "vehicle.emergency.police": "car",
    "vehicle.emergency.ambulance": "van", "vehicle.truck": "van", "vehicle.construction": "van",
    "vehicle.trailer": "van",
    "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus",
    "vehicle.bicycle": "cyclist", "vehicle.motorcycle": "cyclist",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.wheelchair": "pedestrian", "human.pedestrian.personal_mobility": "pedestrian",
}
# Known and left out on purpose (not agents the world model is conditioned on).
IGNORED_CATEGORIES = frozenset({"animal", "human.pedestrian.stroller", "movable_object.barrier",
                                "movable_object.debris", "movable_object.pushable_pullable",
                                "movable_object.trafficcone", "static_object.bicycle_rack"})
WITHOUT_RIDER = "cycle.without_rider"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# What a scene description says of the conditions ("Night, rain, parked cars"; "after rain" is not rain).
_NIGHT = re.compile(r"\bnight\b", re.IGNORECASE)
_RAIN = re.compile(r"(?<!after )\b(rain|raining|rainy)\b", re.IGNORECASE)


def category_of(ann: dict) -> str | None:
    """Our category of an annotation (with ``category_name`` and ``attribute_names`` resolved), or None."""
    ours = CATEGORY_MAP.get(ann.get("category_name"))
    if ours == "cyclist" and WITHOUT_RIDER in (ann.get("attribute_names") or ()):
        return None   # a parked bicycle
    return ours


def category_counts(bundle: dict) -> dict[str, Counter]:
    """This scene's annotations by nuScenes category: mapped (to ours), ignored (known, left out) and unknown
    (a name the table does not know: a newer dataset version?)."""
    out = {"mapped": Counter(), "ignored": Counter(), "unknown": Counter()}
    for ann in bundle.get("sample_annotation") or ():
        name = str(ann.get("category_name"))
        ours = category_of(ann)
        if ours is not None:
            out["mapped"][f"{name} -> {ours}"] += 1
        elif name in CATEGORY_MAP or name in IGNORED_CATEGORIES:
            out["ignored"][name + (" (without rider)" if name in CATEGORY_MAP else "")] += 1
        else:
            out["unknown"][name] += 1
    return out


# ----------------------------------------------------------------------------------------- geometry
def quaternion(value: Any, where: str) -> np.ndarray:
    """A unit quaternion (w, x, y, z) from a table field."""
    q = _vector(value, 4, where)
    n = float(np.linalg.norm(q))
    if not n > 1e-9:
        raise ClipError(Reason.BAD_CALIBRATION, f"{where}: zero quaternion")
    return q / n


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions w, x, y, z -> (..., 3, 3)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def conjugate(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def yaw_of(q: np.ndarray) -> np.ndarray:
    """(..., 4) -> (...,): heading of the rotated x axis (the devkit's ``quaternion_yaw``)."""
    v = rotation_matrix(q)[..., :, 0]
    return np.arctan2(v[..., 1], v[..., 0])


def slerp(q0: np.ndarray, q1: np.ndarray, amount: float) -> np.ndarray:
    """(K, 4) x (K, 4) -> (K, 4): pyquaternion's ``Quaternion.slerp`` (the devkit's), row by row: the shorter
    way round, linear (then normalised) when the two are within acos(0.9995)."""
    q0, q1 = q0 / np.linalg.norm(q0, axis=-1, keepdims=True), q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    amount = float(np.clip(amount, 0.0, 1.0))
    dot = np.sum(q0 * q1, axis=-1)
    q0 = np.where(dot[:, None] < 0, -q0, q0)
    dot = np.abs(dot)
    theta0 = np.arccos(np.clip(dot, -1.0, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        s0 = np.cos(theta0 * amount) - dot * np.sin(theta0 * amount) / np.sin(theta0)
        s1 = np.sin(theta0 * amount) / np.sin(theta0)
    near = dot > 0.9995
    out = np.where(near[:, None], q0 + amount * (q1 - q0), s0[:, None] * q0 + s1[:, None] * q1)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def latlon(location: str, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) map x (east), y (north) in metres -> latitude, longitude in degrees (see the module docstring)."""
    _, lat0, lon0 = LOCATIONS[location]
    lat0, lon0 = math.radians(lat0), math.radians(lon0)
    bearing = np.arctan2(xy[:, 0], xy[:, 1])
    d = np.hypot(xy[:, 0], xy[:, 1]) / EARTH_RADIUS_M
    lat = np.arcsin(math.sin(lat0) * np.cos(d) + math.cos(lat0) * np.sin(d) * np.cos(bearing))
    lon = lon0 + np.arctan2(np.sin(bearing) * np.sin(d) * math.cos(lat0), np.cos(d) - math.sin(lat0) * np.sin(lat))
    return np.degrees(lat), np.degrees(lon)


def ego_motion(t_us: np.ndarray, xy: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses (P,) integer microseconds, (P, 2) positions, (P,) headings -> (P-1,) midpoint times (s), speed,
    curvature. Intervals come from the integers: Unix seconds as float64 resolve only ~0.2 us."""
    theta = np.angle(np.exp(1j * np.diff(yaw)))                     # heading change, wrapped to (-pi, pi]
    step = np.diff(xy, axis=0)
    chord = np.hypot(step[:, 0], step[:, 1])
    forward = np.sign(step[:, 0] * np.cos(yaw[:-1]) + step[:, 1] * np.sin(yaw[:-1]))
    arc = chord / np.sinc(theta / (2 * np.pi)) * np.where(forward < 0, -1.0, 1.0)   # sinc(x) = sin(pi x) / (pi x)
    speed = arc / (np.diff(t_us) / 1e6)
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = np.where(np.abs(arc) >= MIN_ARC_M, theta / arc, 0.0)
    return (t_us[:-1] + t_us[1:]) / 2e6, speed, curvature


# ------------------------------------------------------------------------------------------ fields
def _vector(value: Any, size: int, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != size or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ClipError(Reason.INVALID_RECORD, f"{where}: expected {size} finite numbers, got {str(value)[:80]}")
    return np.asarray(value, dtype=np.float64)


def _seconds(row: dict, where: str) -> float:
    ts = row.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ClipError(Reason.INVALID_RECORD, f"{where}.timestamp: expected integer microseconds, got {str(ts)[:40]}")
    return ts / 1e6


def _text(row: dict | None, key: str, where: str) -> str:
    value = (row or {}).get(key)
    if not isinstance(value, str):
        raise ClipError(Reason.INVALID_RECORD, f"{where}.{key}: expected a string, got {str(value)[:40]}")
    return value


def _chain(data: list[dict], first_sample: str, channel: str) -> list[dict]:
    """The channel's sample_data from the keyframe of the first sample, following ``next`` inside the scene."""
    rows = [sd for sd in data if sd["channel"] == channel]
    start = [sd for sd in rows if sd.get("sample_token") == first_sample and sd.get("is_key_frame") is True]
    if not start:
        return []
    by_token = {sd.get("token"): sd for sd in rows}
    chain, token, seen = [], start[0].get("token"), set()
    while token in by_token and token not in seen:
        seen.add(token)
        chain.append(by_token[token])
        token = by_token[token].get("next")
    return chain


# -------------------------------------------------------------------------------------- conversion
def scene_record(bundle: dict) -> dict[str, Any]:
    """The clip record of one scene; ``ClipError`` (the scene's reject) for anything that does not hold."""
    try:
        return _scene_record(bundle)
    except ClipError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:   # a malformed row
        name = str((bundle.get("scene") or {}).get("name"))[:80] if isinstance(bundle, dict) else "?"
        raise ClipError(Reason.INVALID_RECORD, f"nuScenes scene {name}: malformed table row "
                                               f"({type(err).__name__}: {str(err)[:200]})") from None


def _scene_record(bundle: dict) -> dict[str, Any]:
    scene = bundle["scene"]
    name = _text(scene, "name", "scene")
    if bundle.get("errors"):
        raise ClipError(Reason.INVALID_RECORD, f"nuScenes scene {name}: {bundle['errors'][0]}"
                                               + (f" (+{len(bundle['errors']) - 1} more)" if len(bundle["errors"]) > 1 else ""))
    log = bundle["log"]
    location = _text(log, "location", "log")
    if location not in LOCATIONS:
        raise ClipError(Reason.INVALID_RECORD, f"log.location: {location[:60]!r} has no known map origin (GPS) "
                                               f"or country; known: {sorted(LOCATIONS)}")
    samples = {s["token"]: s for s in bundle["samples"]}
    if not samples:
        raise ClipError(Reason.TOO_SHORT, f"nuScenes scene {name}: no samples")
    first = bundle["samples"][0]["token"]
    data = bundle["sample_data"]
    poses, calibrated = bundle["ego_pose"], bundle["calibrated_sensor"]
    channels = sorted({sd["channel"] for sd in data if sd.get("modality") == "camera"},
                      key=lambda c: (CAMERA_ORDER.index(c) if c in CAMERA_ORDER else len(CAMERA_ORDER), c))
    cameras, frames_of = [], []     # frames_of: (channel, chain) of each camera
    for channel in channels:
        chain = _chain(data, first, channel)
        if not chain:
            continue   # a channel without a keyframe in the first sample: the camera is missing (min_cameras)
        where = f"sample_data of {channel}"
        sizes = {(sd.get("width"), sd.get("height")) for sd in chain}
        if len(sizes) != 1:
            raise ClipError(Reason.RESOLUTION_MISMATCH, f"{where}: image size changes within the scene {sorted(map(str, sizes))[:3]}")
        cs_tokens = {sd.get("calibrated_sensor_token") for sd in chain}
        if len(cs_tokens) != 1:
            raise ClipError(Reason.BAD_CALIBRATION, f"{where}: calibrated_sensor changes within the scene")
        cs = calibrated[cs_tokens.pop()]
        k = cs.get("camera_intrinsic")
        if not (isinstance(k, list) and len(k) == 3 and all(isinstance(r, list) and len(r) == 3 for r in k)):
            raise ClipError(Reason.BAD_CALIBRATION, f"calibrated_sensor {cs.get('token')!r}.camera_intrinsic: expected 3x3")
        extr = np.eye(4)
        extr[:3, :3] = rotation_matrix(quaternion(cs.get("rotation"), f"calibrated_sensor {cs.get('token')!r}.rotation"))
        extr[:3, 3] = _vector(cs.get("translation"), 3, f"calibrated_sensor {cs.get('token')!r}.translation")
        ts = np.asarray([_seconds(sd, f"sample_data {sd.get('token')!r}") for sd in chain])
        rate = 1.0 / float(np.median(np.diff(ts))) if len(ts) > 1 and np.median(np.diff(ts)) > 0 else 0.0
        width, height = sizes.pop()
        cameras.append({"name": channel, "frame_rate": rate, "timestamps": ts.tolist(), "width": width,
                        "height": height, "intrinsics": [k[0][0], k[1][1], k[0][2], k[1][2]],
                        "extrinsics": extr.tolist(), "distortion": [0.0] * 5,
                        "frames": [_text(sd, "filename", f"sample_data {sd.get('token')!r}") for sd in chain]})
        frames_of.append((channel, chain))
    if not cameras:
        raise ClipError(Reason.MISSING_CAMERA, f"nuScenes scene {name}: no camera sample_data in its first sample")

    # Ego motion and GPS from the ego channel's poses.
    ego_chain = _chain(data, first, EGO_CHANNEL) or frames_of[0][1]
    pose_rows = sorted({sd["ego_pose_token"]: poses[sd["ego_pose_token"]] for sd in ego_chain}.values(),
                       key=lambda p: _seconds(p, f"ego_pose {p.get('token')!r}"))
    t_us = np.asarray([p["timestamp"] for p in pose_rows], dtype=np.int64)
    keep = np.concatenate([[True], np.diff(t_us) > 0])
    pose_rows, t_us = [p for p, k in zip(pose_rows, keep) if k], t_us[keep]
    t = t_us / 1e6
    if len(pose_rows) < 2:
        raise ClipError(Reason.TOO_SHORT, f"nuScenes scene {name}: fewer than two ego poses")
    xyz = np.stack([_vector(p.get("translation"), 3, f"ego_pose {p.get('token')!r}.translation") for p in pose_rows])
    yaw = yaw_of(np.stack([quaternion(p.get("rotation"), f"ego_pose {p.get('token')!r}.rotation") for p in pose_rows]))
    mid, speed, curvature = ego_motion(t_us, xyz[:, :2], yaw)
    lat, lon = latlon(location, xyz[:, :2])

    description = scene.get("description") if isinstance(scene.get("description"), str) else ""
    metadata = {"country": LOCATIONS[location][0]}
    if _NIGHT.search(description):
        metadata["time_of_day"] = "night"
    if _RAIN.search(description):
        metadata["weather"] = "rain"

    vehicle = log.get("vehicle") if isinstance(log.get("vehicle"), str) and log.get("vehicle") else "unknown"
    return {
        "schema_version": 1, "clip_id": name, "drive_id": _ID_UNSAFE.sub("_", _text(log, "logfile", "log")) or "log",
        "rig_id": "nuscenes-" + _ID_UNSAFE.sub("_", vehicle), "start_time_s": min(c["timestamps"][0] for c in cameras),
        "cameras": cameras,
        "ego": {"timestamps": mid.tolist(), "speed": speed.tolist(), "curvature": curvature.tolist()},
        "gps": {"timestamps": t.tolist(), "latitude": lat.tolist(), "longitude": lon.tolist()},
        "metadata": metadata,
        "boxes": _boxes(frames_of, samples, bundle["sample_annotation"], poses),
    }


def _boxes(frames_of: list[tuple[str, list[dict]]], samples: dict[str, dict], annotations: list[dict],
           poses: dict[str, dict]) -> dict[str, Any]:
    """Boxes in the ego frame at every camera timestamp (see the module docstring)."""
    anns_of: dict[str, list[dict]] = {}
    for ann in annotations:
        anns_of.setdefault(ann["sample_token"], []).append(ann)
    at_time: dict[float, dict] = {}
    for _, chain in frames_of:
        for sd in chain:
            at_time.setdefault(_seconds(sd, f"sample_data {sd.get('token')!r}"), sd)
    times = sorted(at_time)
    out = {"timestamps": times, "frame_index": [], "center": [], "size": [], "yaw": [], "category": []}
    for i, time in enumerate(times):
        sd = at_time[time]
        sample = samples.get(sd["sample_token"])
        if sample is None:
            continue
        curr = [a for a in anns_of.get(sample["token"], ()) if category_of(a) is not None]
        if not curr:
            continue
        center = np.stack([_vector(a.get("translation"), 3, f"sample_annotation {a.get('token')!r}.translation") for a in curr])
        rot = np.stack([quaternion(a.get("rotation"), f"sample_annotation {a.get('token')!r}.rotation") for a in curr])
        prev = samples.get(sample.get("prev") or "")
        if not sd.get("is_key_frame") and prev is not None:
            _seconds(prev, "sample"), _seconds(sample, "sample")   # integers, or the scene's reject
            t0, t1 = prev["timestamp"], sample["timestamp"]       # microseconds, exact (as the devkit's)
            tc = max(t0, min(t1, sd["timestamp"]))
            amount = (tc - t0) / (t1 - t0) if t1 > t0 else 1.0
            before = {a.get("instance_token"): a for a in anns_of.get(prev["token"], ())}
            idx = [j for j, a in enumerate(curr) if a.get("instance_token") in before]
            if idx:
                p = [before[curr[j]["instance_token"]] for j in idx]
                pc = np.stack([_vector(a.get("translation"), 3, f"sample_annotation {a.get('token')!r}.translation") for a in p])
                pr = np.stack([quaternion(a.get("rotation"), f"sample_annotation {a.get('token')!r}.rotation") for a in p])
                center[idx] = pc + (center[idx] - pc) * amount
                rot[idx] = slerp(pr, rot[idx], amount)
        pose = poses[sd["ego_pose_token"]]
        q_ego = quaternion(pose.get("rotation"), f"ego_pose {pose.get('token')!r}.rotation")
        t_ego = _vector(pose.get("translation"), 3, f"ego_pose {pose.get('token')!r}.translation")
        center = (center - t_ego) @ rotation_matrix(q_ego)        # R^T (c - t), row-wise
        yaw = yaw_of(multiply(conjugate(q_ego)[None], rot))
        wlh = np.stack([_vector(a.get("size"), 3, f"sample_annotation {a.get('token')!r}.size") for a in curr])
        out["frame_index"] += [i] * len(curr)
        out["center"] += center.tolist()
        out["size"] += wlh[:, [1, 0, 2]].tolist()
        out["yaw"] += yaw.tolist()
        out["category"] += [category_of(a) for a in curr]
    return out
