"""Encoding a window's videos, and packing the window into its WebDataset sample.

Videos are encoded in the task that decoded the frames (``pipelines/shards/window.py``), so
full-resolution frames never cross a process boundary unless a detector network needs them. The
same task builds every other member of the sample (its json, the boxes), so the clip record and
the boxes stay there too; only each camera's middle frame travels on, to the CLIP stage, beside
the sample's bytes. Packing, after it, appends the embedding.
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
from pipelines.shards.common import object_column, parse_clip


# The columns a window carries past the encode stage: its plan, and what packing and staging read.
PLAN_COLUMNS = ("key", "shard", "split", "weight", "cell", "clip_id", "drive_id", "window", "start_time")


def sample_json(row: dict, clip: Clip, cameras: list[dict], timestamps: np.ndarray) -> dict:
    """The sample's ``<key>.json``: its plan, timing, calibration, ego motion, GPS track and metadata."""
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


class EncodeVideos:
    """Callable Ray Data stage: decoded and annotated window rows -> ``members``: every tar member of the
    sample but the CLIP embedding (``<key>.json``, ``<key>.<camera>.mp4``, ``<key>.boxes.npy``,
    ``<key>.boxes_valid.npy``), as bytes, and ``frames`` cut down to each camera's middle frame,
    (N, 1, H, W, 3): all the CLIP stage reads.

    Only ``PLAN_COLUMNS``, ``members``, ``frames`` and the reject columns go on: the clip record, the
    full frames and the boxes stay in this task. A transient error (out of memory) is tried
    ``cfg.retry.attempts`` times before the window is rejected.
    """

    def __init__(self, config_json: str):
        cfg = ShardBuildConfig.model_validate_json(config_json)
        self.codec, self.retry = VideoCodec.from_config(cfg.codec), cfg.retry

    def encode(self, row: dict) -> tuple[bytes, np.ndarray]:
        """One window -> (its tar members but the CLIP one, the middle frames (N, 1, H, W, 3))."""
        key, frames = str(row["key"]), row["frames"]
        t = np.asarray(row["timestamps"], dtype=np.float64)
        fps = 1.0 / float(np.median(np.diff(t)))
        cameras = json.loads(row["cameras_json"])
        videos = tar_members([(f"{key}.{cam['name']}.mp4", encode_video(np.asarray(frames_n), fps, self.codec))
                              for cam, frames_n in zip(cameras, frames)])
        head = tar_members([(f"{key}.json", dumps(sample_json(row, parse_clip(row["clip_json"]), cameras, t)).encode())])
        tail = tar_members([
            (f"{key}.boxes.npy", npy_bytes(np.asarray(row["boxes"], dtype=np.float32))),
            (f"{key}.boxes_valid.npy", npy_bytes(np.asarray(row["boxes_valid"], dtype=bool)))])
        middle = frames.shape[1] // 2
        return head + videos + tail, np.ascontiguousarray(frames[:, middle: middle + 1])   # tar member runs concatenate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        # A rejected row's frames go no further: nothing downstream reads them.
        empty = (b"", np.zeros((0, 0, 0, 0, 3), np.uint8))
        encoded, rejects = map_rows(lambda i: self.encode({k: v[i] for k, v in batch.items()}),
                                    n, "encode", Reason.DECODE_FAILED, empty, batch_rejects(batch, n),
                                    retry=self.retry)
        out = {k: batch[k] for k in PLAN_COLUMNS}
        out["members"] = np.asarray([m for m, _ in encoded], dtype=object)
        out["frames"] = object_column([f for _, f in encoded])
        return out | reject_columns(rejects)


class PackSamples:
    """Callable Ray Data stage: encoded and embedded window rows -> ``sample``: the whole sample's tar
    member bytes (the encode stage's members, then ``<key>.clip.npy``)."""

    def pack(self, key: str, members: bytes, clip: np.ndarray) -> bytes:
        return members + tar_members([(f"{key}.clip.npy", npy_bytes(np.asarray(clip, dtype=np.float32)))])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        samples, rejects = map_rows(lambda i: self.pack(str(batch["key"][i]), bytes(batch["members"][i]),
                                                        batch["clip"][i]),
                                    n, "pack", Reason.DECODE_FAILED, b"", batch_rejects(batch, n))
        out = {k: batch[k] for k in PLAN_COLUMNS}
        out["sample"] = np.asarray(samples, dtype=object)
        return out | reject_columns(rejects)


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def encode_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return EncodeVideos(config_json)(batch)


def pack_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return PackSamples()(batch)
