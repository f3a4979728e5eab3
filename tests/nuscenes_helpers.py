"""A small nuScenes dataset in the real layout, written by the tests, with its ground truth kept on the side.

``<root>/v1.0-mini/<table>.json`` with the tables' real field names and types (nuscenes-devkit
docs/schema_nuscenes.md), JPEG frames under ``samples/`` (keyframes) and ``sweeps/`` (the rest), one log and
scene per entry of ``SCENES``. Every quantity is analytic, so the tests can check the conversion against a
hand computation rather than against the code under test:

- the ego drives a circular arc (``speed`` m/s, ``curvature`` 1/m) from a pose in the map's positive quadrant;
- each camera looks out at a fixed yaw, records at ~12 Hz from its own offset (the rig is not synchronous);
  LIDAR_TOP at 20 Hz defines the 2 Hz keyframes (samples);
- objects move linearly with constant yaw, so the devkit's interpolation between keyframes is exact, and
  each frame has the objects' boxes drawn as filled rectangles where they project (``Truth.rects``).

Geometry here is written out with yaw-only rotations on purpose: it shares nothing with the converter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, FOCAL = 192, 108, 110.0
T0_US = 1_532_402_927_000_000
CAMERA_YAW = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0, "CAM_BACK_RIGHT": -110.0, "CAM_BACK": 180.0,
              "CAM_BACK_LEFT": 110.0, "CAM_FRONT_LEFT": 55.0}
CAMERA_OFFSET_US = {"CAM_FRONT": 10_000, "CAM_FRONT_RIGHT": 18_000, "CAM_BACK_RIGHT": 26_000, "CAM_BACK": 34_000,
                    "CAM_BACK_LEFT": 42_000, "CAM_FRONT_LEFT": 2_000}
CAMERA_PERIOD_US = 83_333
LIDAR_PERIOD_US = 50_000
SAMPLE_PERIOD_US = 500_000
COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 200, 30), (200, 30, 200), (30, 200, 200),
          (240, 140, 20), (120, 60, 200)]


@dataclass
class Obj:
    category: str
    start: tuple[float, float]       # ego-relative (forward, left) at the scene's start, metres
    velocity: tuple[float, float]    # global m/s
    size_wlh: tuple[float, float, float]
    yaw: float                       # global yaw, radians
    attributes: tuple[str, ...] = ()
    first_sample: int = 0            # annotated from this sample on


@dataclass
class Scene:
    name: str
    location: str
    description: str
    speed: float
    curvature: float
    heading: float
    origin: tuple[float, float]
    samples: int
    objects: list[Obj]
    t0_us: int = T0_US               # the scene's first keyframe on the Unix clock


SCENES = [
    Scene("scene-0061", "boston-seaport", "Ped crossing, parked cars, turn left", 3.0, 0.02, 0.4, (620.0, 1180.0),
          5, [Obj("vehicle.car", (14.0, 1.5), (2.0, 0.5), (1.9, 4.5, 1.6), 0.6),
              Obj("human.pedestrian.adult", (9.0, -3.5), (0.0, 0.8), (0.7, 0.7, 1.8), 1.2),
              Obj("vehicle.bus.rigid", (-16.0, -2.0), (2.5, 1.0), (2.9, 11.0, 3.2), 0.3),
              Obj("vehicle.bicycle", (3.0, 9.0), (0.0, 0.0), (0.6, 1.8, 1.2), 2.0, ("cycle.with_rider",)),
              Obj("vehicle.bicycle", (-4.0, -8.0), (0.0, 0.0), (0.6, 1.8, 1.2), -1.0, ("cycle.without_rider",)),
              Obj("movable_object.trafficcone", (7.0, 5.0), (0.0, 0.0), (0.4, 0.4, 0.8), 0.0),
              Obj("vehicle.hovercraft", (-9.0, 7.0), (0.0, 0.0), (2.0, 3.0, 1.5), 0.0),
              Obj("vehicle.truck", (11.0, -9.0), (0.0, 0.0), (2.5, 7.0, 3.0), 1.0, (), 2)]),
    Scene("scene-0103", "singapore-onenorth", "Night, rain, parked cars, turn right", 4.0, -0.03, 2.0,
          (1450.0, 870.0), 5,
          [Obj("vehicle.car", (12.0, -1.0), (-1.5, 2.0), (1.8, 4.2, 1.5), 2.2),
           Obj("human.pedestrian.child", (-7.0, 6.0), (0.5, 0.0), (0.5, 0.5, 1.2), 0.0)], T0_US + 86_400_000_000),
]


def token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def matrix_quaternion(r: np.ndarray) -> list[float]:
    """Rotation matrix -> unit quaternion w, x, y, z (Shepperd's method, the branch on the largest term)."""
    tr = np.trace(r)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    return [float(v) for v in q]


def camera_rotation(channel: str) -> np.ndarray:
    """Camera (x right, y down, z forward) -> ego, for a camera looking out at its yaw, level."""
    yaw = math.radians(CAMERA_YAW[channel])
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    return np.stack([right, [0.0, 0.0, -1.0], forward], axis=1)


def camera_translation(channel: str) -> np.ndarray:
    yaw = math.radians(CAMERA_YAW[channel])
    return np.array([1.0 + 0.8 * math.cos(yaw), 0.8 * math.sin(yaw), 1.6])


def intrinsic() -> list[list[float]]:
    return [[FOCAL, 0.0, WIDTH / 2], [0.0, FOCAL, HEIGHT / 2], [0.0, 0.0, 1.0]]


def ego_pose(scene: Scene, t_us: int) -> tuple[np.ndarray, float]:
    """(x, y) and heading of the ego at ``t_us`` (the circular arc)."""
    tau = (t_us - scene.t0_us) / 1e6
    k, v, h0 = scene.curvature, scene.speed, scene.heading
    h = h0 + v * k * tau
    if abs(k) < 1e-12:
        xy = np.array(scene.origin) + v * tau * np.array([math.cos(h0), math.sin(h0)])
    else:
        xy = np.array(scene.origin) + np.array([math.sin(h) - math.sin(h0), -(math.cos(h) - math.cos(h0))]) / k
    return xy, h


def object_center(scene: Scene, obj: Obj, t_us: int) -> np.ndarray:
    """Global centre of ``obj`` at ``t_us`` (its start is relative to the ego's pose at the scene's start)."""
    xy0, h0 = ego_pose(scene, scene.t0_us)
    f, left = obj.start
    start = xy0 + f * np.array([math.cos(h0), math.sin(h0)]) + left * np.array([-math.sin(h0), math.cos(h0)])
    tau = (t_us - scene.t0_us) / 1e6
    return np.array([*(start + tau * np.array(obj.velocity)), obj.size_wlh[2] / 2])


def to_ego(scene: Scene, t_us: int, points: np.ndarray) -> np.ndarray:
    xy, h = ego_pose(scene, t_us)
    c, s = math.cos(h), math.sin(h)
    d = points[..., :2] - xy
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], points[..., 2]], -1)


def corners(center: np.ndarray, wlh: tuple[float, float, float], yaw: float) -> np.ndarray:
    w, length, h = wlh
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for dx in (-length / 2, length / 2):
        for dy in (-w / 2, w / 2):
            for dz in (-h / 2, h / 2):
                out.append([center[0] + c * dx - s * dy, center[1] + s * dx + c * dy, center[2] + dz])
    return np.array(out)


def project(channel: str, ego_points: np.ndarray) -> np.ndarray | None:
    """Ego-frame points -> the 2D box (x0, y0, x1, y1) in native pixels, or None when any is behind."""
    cam = (ego_points - camera_translation(channel)) @ camera_rotation(channel)
    if np.any(cam[:, 2] < 0.5):
        return None
    u = FOCAL * cam[:, 0] / cam[:, 2] + WIDTH / 2
    v = FOCAL * cam[:, 1] / cam[:, 2] + HEIGHT / 2
    return np.array([u.min(), v.min(), u.max(), v.max()])


@dataclass
class Truth:
    root: str
    version: str
    rects: dict[tuple[str, int], dict[int, np.ndarray]] = field(default_factory=dict)   # (channel, t_us) -> obj -> rect
    frames: dict[tuple[str, int], tuple[int, bool]] = field(default_factory=dict)       # -> (sample, keyframe)
    scene_of: dict[str, Scene] = field(default_factory=dict)


def sample_times(scene: Scene) -> list[int]:
    return [scene.t0_us + k * SAMPLE_PERIOD_US for k in range(scene.samples)]


def write_dataset(root: str, version: str = "v1.0-mini", scenes: list[Scene] = SCENES,
                  quality: int = 92) -> Truth:
    """Write the dataset under ``root``; returns the drawn rectangles and the scenes for the tests."""
    os.makedirs(os.path.join(root, version), exist_ok=True)
    truth = Truth(root, version, scene_of={s.name: s for s in scenes})
    tables = {name: [] for name in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log",
                                    "map", "sample", "sample_annotation", "sample_data", "scene", "sensor",
                                    "visibility")}
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": "visibility of whole object is between 80 and 100%"}]
    categories = sorted({o.category for s in scenes for o in s.objects})
    tables["category"] = [{"token": token("category", c), "name": c, "description": c, "index": i}
                          for i, c in enumerate(categories)]
    attributes = sorted({a for s in scenes for o in s.objects for a in o.attributes})
    tables["attribute"] = [{"token": token("attribute", a), "name": a, "description": a} for a in attributes]
    channels = list(CAMERA_YAW) + ["LIDAR_TOP"]
    for ch in channels:
        tables["sensor"].append({"token": token("sensor", ch), "channel": ch,
                                 "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
    for si, scene in enumerate(scenes):
        # Scenes of one dataset are hours apart on the Unix clock; each scene is its own log here.
        log_token = token("log", scene.name)
        logfile = f"n015-2018-07-{24 + si}-11-22-45+0800"
        tables["log"].append({"token": log_token, "logfile": logfile, "vehicle": "n015",
                              "date_captured": f"2018-07-{24 + si}", "location": scene.location})
        scene_token = token("scene", scene.name)
        times = sample_times(scene)
        sample_tokens = [token("sample", scene.name, k) for k in range(len(times))]
        for k, t in enumerate(times):
            tables["sample"].append({"token": sample_tokens[k], "timestamp": t, "scene_token": scene_token,
                                     "prev": sample_tokens[k - 1] if k else "",
                                     "next": sample_tokens[k + 1] if k + 1 < len(times) else ""})
        tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(times),
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                "name": scene.name, "description": scene.description})
        # Annotations at the keyframes.
        for oi, obj in enumerate(scene.objects):
            inst = token("instance", scene.name, oi)
            anns = [token("ann", scene.name, oi, k) for k in range(obj.first_sample, len(times))]
            tables["instance"].append({"token": inst, "category_token": token("category", obj.category),
                                       "nbr_annotations": len(anns), "first_annotation_token": anns[0],
                                       "last_annotation_token": anns[-1]})
            for j, k in enumerate(range(obj.first_sample, len(times))):
                tables["sample_annotation"].append({
                    "token": anns[j], "sample_token": sample_tokens[k], "instance_token": inst,
                    "visibility_token": "4", "attribute_tokens": [token("attribute", a) for a in obj.attributes],
                    "translation": object_center(scene, obj, times[k]).tolist(), "size": list(obj.size_wlh),
                    "rotation": yaw_quaternion(obj.yaw), "num_lidar_pts": 10, "num_radar_pts": 0,
                    "prev": anns[j - 1] if j else "", "next": anns[j + 1] if j + 1 < len(anns) else ""})
        # Sensors: calibration per scene (each log its own vehicle calibration), then the sample_data chains.
        for ch in channels:
            cs_token = token("calibrated_sensor", scene.name, ch)
            if ch == "LIDAR_TOP":
                tables["calibrated_sensor"].append({"token": cs_token, "sensor_token": token("sensor", ch),
                                                    "translation": [0.9, 0.0, 1.8], "rotation": yaw_quaternion(-math.pi / 2),
                                                    "camera_intrinsic": []})
                stamps = list(range(times[0], times[-1] + 1, LIDAR_PERIOD_US))
            else:
                tables["calibrated_sensor"].append({
                    "token": cs_token, "sensor_token": token("sensor", ch),
                    "translation": camera_translation(ch).tolist(),
                    "rotation": matrix_quaternion(camera_rotation(ch)), "camera_intrinsic": intrinsic()})
                stamps = list(range(times[0] + CAMERA_OFFSET_US[ch], times[-1] + 1, CAMERA_PERIOD_US))
            keyframes = {int(np.argmin([abs(s - t) for s in stamps])): k for k, t in enumerate(times)}
            sd_tokens = [token("sample_data", scene.name, ch, i) for i in range(len(stamps))]
            for i, t in enumerate(stamps):
                key = i in keyframes
                sample = keyframes[i] if key else next(k for k, st in enumerate(times) if st >= t)
                folder = "samples" if key else "sweeps"
                ext = "pcd.bin" if ch == "LIDAR_TOP" else "jpg"
                filename = f"{folder}/{ch}/{logfile}__{ch}__{t}.{ext}"
                xy, h = ego_pose(scene, t)
                tables["ego_pose"].append({"token": sd_tokens[i], "timestamp": t,
                                           "rotation": yaw_quaternion(h), "translation": [xy[0], xy[1], 0.0]})
                tables["sample_data"].append({
                    "token": sd_tokens[i], "sample_token": sample_tokens[sample], "ego_pose_token": sd_tokens[i],
                    "calibrated_sensor_token": cs_token, "timestamp": t, "fileformat": ext.split(".")[-1],
                    "is_key_frame": key, "height": 0 if ch == "LIDAR_TOP" else HEIGHT,
                    "width": 0 if ch == "LIDAR_TOP" else WIDTH, "filename": filename,
                    "prev": sd_tokens[i - 1] if i else "", "next": sd_tokens[i + 1] if i + 1 < len(stamps) else ""})
                if ch != "LIDAR_TOP":
                    truth.rects[(ch, t)] = _draw(os.path.join(root, filename), scene, ch, t, sample, key, quality)
                    truth.frames[(ch, t)] = (sample, key)
    # One map per location, its mask a PNG (the devkit's loader opens the table's first map).
    for location in sorted({log["location"] for log in tables["log"]}):
        tok = token("map", location)
        tables["map"].append({"token": tok, "category": "semantic_prior", "filename": f"maps/{tok}.png",
                              "log_tokens": [log["token"] for log in tables["log"] if log["location"] == location]})
        os.makedirs(os.path.join(root, "maps"), exist_ok=True)
        Image.new("L", (8, 8), 255).save(os.path.join(root, "maps", f"{tok}.png"))
    for name, rows in tables.items():
        with open(os.path.join(root, version, f"{name}.json"), "w") as f:
            json.dump(rows, f, indent=0)
    return truth


def box_at(scene: Scene, obj: Obj, sample: int, key: bool, t_us: int) -> np.ndarray | None:
    """The object's global centre in a frame of ``sample`` (keyframe or not) at ``t_us``, as the devkit's
    ``get_boxes`` gives it: a keyframe, or a frame of the first sample or of the object's first annotated
    sample, has the annotation as it is; any other is interpolated from the previous sample (the time clamped
    to the two), which for linear motion is the motion itself. None where the sample has no annotation of it."""
    times = sample_times(scene)
    if sample < obj.first_sample:
        return None
    if key or sample == 0 or sample == obj.first_sample:
        return object_center(scene, obj, times[sample])
    return object_center(scene, obj, min(max(t_us, times[sample - 1]), times[sample]))


def _draw(path: str, scene: Scene, channel: str, t_us: int, sample: int, key: bool,
          quality: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(t_us % 2**32)
    base = np.full((HEIGHT, WIDTH, 3), 90, np.uint8) + rng.integers(0, 20, (HEIGHT, WIDTH, 1), dtype=np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    rects = {}
    for oi, obj in enumerate(scene.objects):
        center = box_at(scene, obj, sample, key, t_us)
        if center is None:
            continue
        rect = project(channel, to_ego(scene, t_us, corners(center, obj.size_wlh, obj.yaw)))
        if rect is None or rect[2] < 0 or rect[0] > WIDTH or rect[3] < 0 or rect[1] > HEIGHT:
            continue
        rects[oi] = rect
        draw.rectangle([float(v) for v in rect], fill=COLORS[oi % len(COLORS)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, quality=quality)
    return rects
