"""Encoding a window's videos, and packing the window into its WebDataset sample.

Videos are encoded in the task that decoded the frames (``pipelines/shards/window.py``), so
full-resolution frames never cross a process boundary unless a detector network needs them. Only
each camera's middle frame travels on, to the CLIP stage; packing comes after it.
"""

from __future__ import annotations

import json

import numpy as np

from gaia2.config.shards import ShardBuildConfig
from gaia2.schema.clip import Clip, dumps
from gaia2.schema.errors import Reason
from gaia2.schema.metadata import VOCAB_VERSION, decode_metadata
from gaia2.schema.sample import SAMPLE_VERSION, npy_bytes, tar_members
from gaia2.video.encode import VideoCodec, encode_video
from pipelines.rejects import batch_rejects, map_rows, reject_columns
from pipelines.shards.common import object_column


class PackSamples:
    """Callable Ray Data stage: encoded + annotated window rows -> ``sample`` (tar member bytes)."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def sample_json(self, row: dict, clip: Clip, cameras: list[dict], timestamps: np.ndarray) -> dict:
        t0 = float(timestamps[0])
        for cam in cameras:
            cam["frame_timestamps"] = [round(t - t0, 6) for t in cam["frame_timestamps"]]
        gps_track = json.loads(row["track_json"])
        return {
            "sample_version": SAMPLE_VERSION, "vocab_version": VOCAB_VERSION,
            "key": row["key"], "clip_id": clip.clip_id, "drive_id": clip.drive_id, "rig_id": clip.rig_id,
            "window": int(row["window"]), "split": row["split"], "weight": float(row["weight"]),
            "cell": row["cell"], "start_time_s": t0,
            "frame_rate": float(1.0 / np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0,
            "timestamps": [round(t - t0, 6) for t in timestamps.tolist()],   # relative to the first frame
            "cameras": cameras,
            "ego": {"speed": np.interp(timestamps, clip.ego.timestamps, clip.ego.speed).tolist(),
                    "curvature": np.interp(timestamps, clip.ego.timestamps, clip.ego.curvature).tolist()},
            "gps": {"longitude": [p[0] for p in gps_track], "latitude": [p[1] for p in gps_track]},
            "metadata": dict(clip.metadata_ids),
            "metadata_values": decode_metadata(clip.metadata_ids),
        }

    def pack(self, row: dict) -> bytes:
        clip = Clip.from_dict(json.loads(row["clip_json"]))
        cameras = json.loads(row["cameras_json"])
        timestamps = np.asarray(row["timestamps"], dtype=np.float64)
        key = row["key"]
        head = tar_members([(f"{key}.json", dumps(self.sample_json(row, clip, cameras, timestamps)).encode())])
        tail = tar_members([
            (f"{key}.boxes.npy", npy_bytes(np.asarray(row["boxes"], dtype=np.float32))),
            (f"{key}.boxes_valid.npy", npy_bytes(np.asarray(row["boxes_valid"], dtype=bool))),
            (f"{key}.clip.npy", npy_bytes(np.asarray(row["clip"], dtype=np.float32)))])
        return head + bytes(row["videos"]) + tail   # tar member runs concatenate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        samples, rejects = map_rows(lambda i: self.pack({k: v[i] for k, v in batch.items()}), n, "pack",
                                    Reason.DECODE_FAILED, b"", batch_rejects(batch, n))
        keep = ("key", "shard", "split", "weight", "cell", "clip_id", "drive_id", "window", "start_time")
        out = {k: batch[k] for k in keep}
        out["sample"] = np.asarray(samples, dtype=object)
        return out | reject_columns(rejects)


class EncodeVideos:
    """Callable Ray Data stage: ``frames`` (N, T, H, W, 3) -> ``videos``: the tar members
    ``<key>.<camera>.mp4`` of the sample, as bytes (one column of one type, whatever the rig).

    ``frames`` is cut down to each camera's middle frame, (N, 1, H, W, 3): all the CLIP stage reads. A
    transient error (out of memory) is tried ``cfg.retry.attempts`` times before the window is rejected.
    """

    def __init__(self, config_json: str):
        cfg = ShardBuildConfig.model_validate_json(config_json)
        self.codec, self.retry = VideoCodec.from_config(cfg.codec), cfg.retry

    def encode(self, key: str, frames: np.ndarray, timestamps: np.ndarray,
               cameras_json: str) -> tuple[bytes, np.ndarray]:
        """One window -> (its ``<key>.<camera>.mp4`` tar members, the middle frames (N, 1, H, W, 3))."""
        t = np.asarray(timestamps, dtype=np.float64)
        fps = 1.0 / float(np.median(np.diff(t)))
        names = [c["name"] for c in json.loads(cameras_json)]
        videos = tar_members([(f"{key}.{name}.mp4", encode_video(np.asarray(cam), fps, self.codec))
                              for name, cam in zip(names, frames)])
        middle = frames.shape[1] // 2
        return videos, np.ascontiguousarray(frames[:, middle: middle + 1])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        # A rejected row's frames go no further: nothing downstream reads them.
        empty = (b"", np.zeros((0, 0, 0, 0, 3), np.uint8))
        encoded, rejects = map_rows(
            lambda i: self.encode(str(batch["key"][i]), batch["frames"][i], batch["timestamps"][i],
                                  str(batch["cameras_json"][i])),
            n, "encode", Reason.DECODE_FAILED, empty, batch_rejects(batch, n), retry=self.retry)
        out = dict(batch)
        out["videos"] = np.asarray([v for v, _ in encoded], dtype=object)
        out["frames"] = object_column([f for _, f in encoded])
        return out | reject_columns(rejects)


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def encode_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return EncodeVideos(config_json)(batch)


def pack_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return PackSamples(config_json)(batch)
