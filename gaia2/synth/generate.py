"""Synthetic multi-rig clips in the clip-directory layout: ``<out>/<clip_id>/{clip.json, <camera>.mp4}``.

``generate_clip`` is pure: clip ``index`` of ``seed`` is always the same record and the same bytes,
whichever process makes it and whatever else is generated, so ``generate_clips`` can fan out over
processes and still write identical files.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Mapping

import numpy as np

from gaia2.schema.clip import SCHEMA_VERSION, dumps
from gaia2.synth.agents import BOX_RANGE_M
from gaia2.synth.render import camera_taus, render_camera, to_ego
from gaia2.synth.scene import ClipPlan, plan_clip
from gaia2.video.encode import VideoCodec, encode_video, write_atomic

EGO_RATE_HZ = 50.0
GPS_RATE_HZ = 10.0


def _grid(duration_s: float, rate: float) -> np.ndarray:
    """Sample times from 0 to ``duration_s`` inclusive at ``rate``."""
    return np.arange(int(np.floor(duration_s * rate + 1e-9)) + 1) / rate


def _r(x: np.ndarray, decimals: int) -> list[float]:
    # Rounded so the JSON is compact and identical across platforms' last-bit float noise.
    return np.round(np.asarray(x, dtype=np.float64), decimals).tolist()


def clip_record(plan: ClipPlan, native_scale: float = 1.0) -> dict:
    """The Clip JSON form of ``plan`` (video paths relative to the clip directory)."""
    rig, t0 = plan.rig, plan.start_time_s
    cameras = []
    for i, cam in enumerate(rig.cameras):
        w, h = rig.image_size(native_scale)
        cameras.append({
            "name": cam.name, "frame_rate": rig.frame_rate, "timestamps": _r(t0 + camera_taus(plan, i), 6),
            "width": w, "height": h, "intrinsics": _r(rig.intrinsics(i, native_scale), 6),
            "extrinsics": _r(cam.cam_to_ego(), 9), "distortion": list(cam.distortion), "video": f"{cam.name}.mp4"})
    ego_tau = _grid(plan.duration_s, EGO_RATE_HZ)
    ego = plan.ego_state(ego_tau)
    gps_tau = _grid(plan.duration_s, GPS_RATE_HZ)
    g = plan.ego_state(gps_tau)
    east, north = plan.to_world(g["x"], g["y"])
    lat, lon = plan.latlon(east, north)
    return {
        "schema_version": SCHEMA_VERSION, "clip_id": plan.clip_id, "drive_id": plan.drive_id, "rig_id": rig.rig_id,
        "start_time_s": plan.start_time_s, "cameras": cameras,
        "ego": {"timestamps": _r(t0 + ego_tau, 6), "speed": _r(ego["speed"], 5), "curvature": _r(ego["curvature"], 7)},
        "gps": {"timestamps": _r(t0 + gps_tau, 6), "latitude": _r(lat, 8), "longitude": _r(lon, 8)},
        "metadata": dict(plan.metadata),
        "boxes": ground_truth_boxes(plan),
    }


def ground_truth_boxes(plan: ClipPlan) -> dict:
    """Agents within ``BOX_RANGE_M`` of the ego at the reference (first) camera's frame times, ego frame."""
    tau = camera_taus(plan, 0)
    ego = plan.ego_state(tau)
    xyz, yaw, size = plan.boxes_road(tau)
    ex, ey = to_ego(xyz[..., 0], xyz[..., 1], ego)                       # (A, T)
    frame_index, centre, sizes, yaws, cats = [], [], [], [], []
    for f in range(tau.size):
        for a, agent in enumerate(plan.agents):
            if np.hypot(ex[a, f], ey[a, f]) > BOX_RANGE_M:
                continue
            frame_index.append(f)
            centre.append([ex[a, f], ey[a, f], xyz[a, f, 2]])
            sizes.append(size[a])
            yaws.append(np.arctan2(np.sin(yaw[a, f] - ego["theta"][f]), np.cos(yaw[a, f] - ego["theta"][f])))
            cats.append(agent.category)
    return {"timestamps": _r(plan.start_time_s + tau, 6), "frame_index": frame_index,
            "center": _r(np.reshape(centre, (-1, 3)), 4), "size": _r(np.reshape(sizes, (-1, 3)), 4),
            "yaw": _r(yaws, 6), "category": cats}


def generate_clip(index: int, seed: int, duration_s: float = 4.0, native_scale: float = 1.0,
                  overrides: Mapping[str, str | None] | None = None) -> tuple[dict, dict[str, bytes]]:
    """One clip: (clip record as a dict in the Clip JSON form, {camera_name: mp4 bytes}); pure and deterministic.

    ``overrides`` pins metadata values (e.g. {"time_of_day": "night"}) without changing anything
    else that does not depend on them: same road, same agents, same ego.
    """
    plan = plan_clip(seed, index, duration_s, overrides)
    return render_plan(plan, native_scale)


def render_plan(plan: ClipPlan, native_scale: float = 1.0) -> tuple[dict, dict[str, bytes]]:
    record = clip_record(plan, native_scale)
    codec = VideoCodec()
    videos = {cam.name: encode_video(render_camera(plan, i, native_scale), plan.rig.frame_rate, codec)
              for i, cam in enumerate(plan.rig.cameras)}
    return record, videos


def write_clip(out_dir: str, index: int, seed: int, duration_s: float = 4.0, native_scale: float = 1.0) -> str:
    """Generate clip ``index`` and write it under ``out_dir``; returns its clip id."""
    record, videos = generate_clip(index, seed, duration_s, native_scale)
    clip_dir = os.path.join(out_dir, record["clip_id"])
    os.makedirs(clip_dir, exist_ok=True)
    for name, data in videos.items():
        write_atomic(os.path.join(clip_dir, f"{name}.mp4"), data)
    # The record last: a directory with clip.json is complete.
    write_atomic(os.path.join(clip_dir, "clip.json"), dumps(record).encode())
    return record["clip_id"]


def generate_clips(out_dir: str, n_clips: int, seed: int = 0, duration_s: float = 4.0,
                   workers: int | None = 1, native_scale: float = 1.0) -> list[str]:
    """Write n_clips clip directories <out_dir>/<clip_id>/{clip.json, <camera>.mp4}; returns the clip ids (sorted).

    ``workers``: processes (None = all cores). Clip ``i`` depends only on (seed, i), so any worker
    count writes the same bytes. Workers are spawned, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    if n_clips < 0:
        raise ValueError(f"n_clips must be >= 0, got {n_clips}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    os.makedirs(out_dir, exist_ok=True)
    if workers == 1 or n_clips <= 1:
        ids = [write_clip(out_dir, i, seed, duration_s, native_scale) for i in range(n_clips)]
    else:
        # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy mid-flight.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, n_clips), mp_context=ctx) as pool:
            futures = [pool.submit(write_clip, out_dir, i, seed, duration_s, native_scale) for i in range(n_clips)]
            ids = [f.result() for f in futures]
    return sorted(ids)
