"""Small hand-made records for unit tests (the synthetic generator makes realistic ones)."""

from __future__ import annotations

import numpy as np

from gaia2.schema.clip import Clip


def camera_dict(name: str, rate: float, offset: float, n: int, width: int = 64, height: int = 48,
                yaw: float = 0.0) -> dict:
    # Camera looking along ego +x (forward), rotated by ``yaw`` about ego z; 1.5 m up.
    c, s = np.cos(yaw), np.sin(yaw)
    fwd, right, down = np.array([c, s, 0.0]), np.array([s, -c, 0.0]), np.array([0.0, 0.0, -1.0])
    ext = np.eye(4)
    ext[:3, :3] = np.stack([right, down, fwd], axis=1)   # columns: camera x, y, z axes in ego frame
    ext[:3, 3] = [1.5, 0.0, 1.5]
    return {"name": name, "frame_rate": rate, "timestamps": (offset + np.arange(n) / rate).tolist(),
            "width": width, "height": height, "intrinsics": [50.0, 50.0, width / 2 - 0.5, height / 2 - 0.5],
            "extrinsics": ext.tolist(), "distortion": [0.0] * 5, "video": f"{name}.mp4"}


def clip_dict(rates=(20.0, 20.0), offsets=(0.0, 0.0), n_frames=(40, 40), clip_id="c0", drive_id="d0") -> dict:
    duration = max(n / r for n, r in zip(n_frames, rates))
    ts = np.arange(0, duration + 0.02, 0.02)
    return {
        "schema_version": 1, "clip_id": clip_id, "drive_id": drive_id, "rig_id": "test", "start_time_s": 0.0,
        "cameras": [camera_dict(f"cam{i}", r, o, n) for i, (r, o, n) in enumerate(zip(rates, offsets, n_frames))],
        "ego": {"timestamps": ts.tolist(), "speed": np.full(len(ts), 10.0).tolist(),
                "curvature": np.zeros(len(ts)).tolist()},
        "gps": {"timestamps": [0.0, duration], "latitude": [51.5, 51.5001], "longitude": [-0.12, -0.12]},
        "metadata": {"country": "GB", "weather": "clear", "time_of_day": "day"},
        "boxes": None,
    }


def make_clip(**kwargs) -> Clip:
    return Clip.from_dict(clip_dict(**kwargs), base_dir="/nonexistent")


def through_a_checkpoint(trainer, fresh, directory):
    """Save ``trainer`` with the jobs' checkpointer (DCP, one process) into ``directory`` and restore it into
    ``fresh`` (a trainer built from the same config); returns ``fresh``."""
    from jobs import checkpoint

    checkpoint.save(str(directory), trainer, rank=0, world=1, data={"epoch": 0, "batch": trainer.step}, config={})
    checkpoint.load(str(directory), fresh, checkpoint.validate(str(directory), 0, 1, {}))
    return fresh
