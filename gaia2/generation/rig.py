"""A spec's rig -> the cameras the world model sees: calibration at the generated image size, trigger offsets,
frame rate, and the mosaic layout of the output video.

Cameras of a named or explicit rig are brought to the generated image size (the tokenizer's frame size) the
way the shard pipeline brings them to the shard size: scaled to cover, centre-cropped, intrinsics adjusted
(``resize_crop_intrinsics``). The world model takes intrinsics normalised by the image size, so with the
shards' aspect ratio (the tokenizer's) this is what training saw. A shard sample's cameras keep the sample's
calibration as recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaia2.camera.model import CameraModel, resize_crop_intrinsics
from gaia2.detection.features import camera_heading
from gaia2.generation.spec import RigSpec, SpecError


@dataclass(frozen=True)
class ResolvedRig:
    source: str                    # "rig:<id>", "cameras", or "sample:<key>"
    frame_rate: float              # Hz
    names: tuple[str, ...]         # the generated cameras, in the model's order
    cameras: tuple[CameraModel, ...]
    offsets_s: np.ndarray          # (N,) trigger offsets

    def model_camera(self) -> dict[str, np.ndarray]:
        """The world model's camera inputs: intrinsics (N, 4) = fx/W, fy/H, cx/W, cy/H; extrinsics (N, 4, 4);
        distortion (N, 5) (as ``gaia2.world_model.sample`` computes them for a training sample)."""
        return {
            "intrinsics": np.array([c.intrinsics / [c.width, c.height, c.width, c.height] for c in self.cameras],
                                   np.float32),
            "extrinsics": np.array([c.cam_to_ego for c in self.cameras], np.float32),
            "distortion": np.array([c.distortion for c in self.cameras], np.float32),
        }

    def to_json(self) -> dict:
        return {"source": self.source, "frame_rate": self.frame_rate, "cameras": [
            {"name": n, "width": c.width, "height": c.height, "intrinsics": [float(v) for v in c.intrinsics],
             "extrinsics": np.asarray(c.cam_to_ego).tolist(), "distortion": [float(v) for v in c.distortion],
             "time_offset_s": float(o)} for n, c, o in zip(self.names, self.cameras, self.offsets_s)]}


def _select(names: list[str], views: list[str] | None, count: int, where: str) -> list[int]:
    """Indices of the generated cameras: ``views`` by name, else the first ``count`` (training's choice)."""
    if views is None:
        if len(names) < count:
            raise SpecError(f"{where}: {len(names)} cameras {names}, the world model takes {count}")
        return list(range(count))
    missing = [v for v in views if v not in names]
    if missing:
        raise SpecError(f"rig.views: no camera {missing} in this rig (it has {names})")
    return [names.index(v) for v in views]


def resolve_rig(spec: RigSpec | None, out_hw: tuple[int, int], cameras: int, max_cameras: int,
                sample_meta: dict | None = None) -> ResolvedRig:
    """``spec`` (or, when None, the rig of ``sample_meta``, a shard sample's json) -> the generated cameras:
    ``views`` when given, else every explicit camera, else the first ``cameras`` of a named rig or a sample.

    out_hw: the generated frame size (height, width); cameras: how many the world model takes by default;
    max_cameras: the most its conditioning accepts.
    """
    h, w = out_hw
    if spec is not None and spec.name is not None:
        from gaia2.synth.rigs import RIGS

        if spec.name not in RIGS:
            raise SpecError(f"rig.name: unknown rig {spec.name!r}; known rigs {sorted(RIGS)}")
        rig = RIGS[spec.name]
        names = [c.name for c in rig.cameras]
        idx = _select(names, spec.views, cameras, "rig.name")
        models = []
        for i in idx:
            native = rig.camera_model(i)
            intr, _, _ = resize_crop_intrinsics(native.intrinsics, (native.width, native.height), (w, h))
            models.append(CameraModel(w, h, intr, native.distortion, native.cam_to_ego))
        offsets = np.array([rig.cameras[i].time_offset_s for i in idx])
        resolved = ResolvedRig(f"rig:{rig.rig_id}", float(rig.frame_rate), tuple(names[i] for i in idx),
                               tuple(models), offsets)
    elif spec is not None and spec.cameras is not None:
        names = [c.name for c in spec.cameras]
        idx = _select(names, spec.views, len(names), "rig.cameras")   # cameras listed are cameras wanted
        models = []
        for i in idx:
            c = spec.cameras[i]
            intr, _, _ = resize_crop_intrinsics(np.array(c.intrinsics, np.float64), (c.width, c.height), (w, h))
            models.append(CameraModel(w, h, intr, np.array(c.distortion, np.float64),
                                      np.array(c.extrinsics, np.float64)))
        resolved = ResolvedRig("cameras", float(spec.frame_rate), tuple(names[i] for i in idx), tuple(models),
                               np.array([spec.cameras[i].time_offset_s for i in idx]))
    else:
        if sample_meta is None:
            raise SpecError("rig: no rig given and no source sample to take one from")
        resolved = _sample_rig(sample_meta, spec.views if spec is not None else None, cameras)
    if len(resolved.names) > max_cameras:
        raise SpecError(f"rig.views: {len(resolved.names)} cameras, the world model takes at most {max_cameras}")
    return resolved


def _sample_rig(meta: dict, views: list[str] | None, cameras: int) -> ResolvedRig:
    key = meta.get("key", "?")
    cams = meta["cameras"]
    names = [c["name"] for c in cams]
    idx = _select(names, views, cameras, f"rig.sample {key!r}")
    grid = np.asarray(meta["timestamps"], np.float64)
    if len(grid) < 2:
        raise SpecError(f"rig.sample {key!r}: fewer than 2 frame timestamps, no frame rate")
    rate = float(1.0 / np.median(np.diff(grid)))
    models, offsets = [], []
    for i in idx:
        c = cams[i]
        models.append(CameraModel(int(c["width"]), int(c["height"]), np.asarray(c["intrinsics"], np.float64),
                                  np.asarray(c["distortion"], np.float64), np.asarray(c["extrinsics"], np.float64)))
        times = np.asarray(c.get("frame_timestamps", grid), np.float64)
        offsets.append(float(np.mean(times - grid)) if times.shape == grid.shape else 0.0)
    return ResolvedRig(f"sample:{key}", rate, tuple(names[i] for i in idx), tuple(models), np.array(offsets))


def mosaic_layout(rig: ResolvedRig) -> list[list[int]]:
    """Rows of camera indices as a person sees the rig from the driver's seat: the forward-looking cameras
    (|heading| < 90 degrees) left to right, then the rear-looking ones left to right as seen in a mirror
    (rear-left on the left)."""
    heading = [np.degrees(camera_heading(c)) for c in rig.cameras]
    front = sorted((i for i, a in enumerate(heading) if abs(a) < 90), key=lambda i: -heading[i])
    rear = sorted((i for i, a in enumerate(heading) if abs(a) >= 90), key=lambda i: heading[i] % 360)
    return [row for row in (front, rear) if row]
