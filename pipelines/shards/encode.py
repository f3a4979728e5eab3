"""Stage 4: encode one window into its WebDataset sample (tar member bytes)."""

from __future__ import annotations

import json

import numpy as np

from gaia2.config.shards import ShardBuildConfig
from gaia2.schema.clip import Clip, dumps
from gaia2.schema.metadata import VOCAB_VERSION, decode_metadata
from gaia2.schema.sample import SAMPLE_VERSION, npy_bytes, tar_members
from gaia2.video.encode import VideoCodec, encode_video


class EncodeSamples:
    """Callable Ray Data stage: decoded + annotated window rows -> ``sample`` (tar member bytes)."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)
        self.codec = VideoCodec.from_config(self.cfg.codec)

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

    def encode(self, row: dict) -> bytes:
        clip = Clip.from_dict(json.loads(row["clip_json"]))
        cameras = json.loads(row["cameras_json"])
        timestamps = np.asarray(row["timestamps"], dtype=np.float64)
        frames = row["frames"]   # (N, T, H, W, 3) uint8
        fps = 1.0 / float(np.median(np.diff(timestamps)))
        key = row["key"]
        files = [(f"{key}.json", dumps(self.sample_json(row, clip, cameras, timestamps)).encode())]
        for cam, cam_frames in zip(clip.cameras, frames):
            files.append((f"{key}.{cam.name}.mp4", encode_video(np.asarray(cam_frames), fps, self.codec)))
        files.append((f"{key}.boxes.npy", npy_bytes(np.asarray(row["boxes"], dtype=np.float32))))
        files.append((f"{key}.boxes_valid.npy", npy_bytes(np.asarray(row["boxes_valid"], dtype=bool))))
        files.append((f"{key}.clip.npy", npy_bytes(np.asarray(row["clip"], dtype=np.float32))))
        return tar_members(files)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        samples, errors = [], list(batch["error"])
        for i in range(n):
            data = b""
            if not errors[i]:
                try:
                    data = self.encode({k: v[i] for k, v in batch.items()})
                except Exception as err:   # becomes a reject row, not a crash
                    errors[i] = f"decode_failed: encoding: {type(err).__name__}: {err}"
            samples.append(data)
        # Pixels are done with: drop them so they don't travel through the shuffle to the writer.
        keep = ("key", "shard", "split", "weight", "cell", "clip_id", "drive_id", "window", "start_time")
        out = {k: batch[k] for k in keep}
        out["sample"] = np.asarray(samples, dtype=object)
        out["error"] = np.asarray(errors, dtype=object)
        return out

# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def encode_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return EncodeSamples(config_json)(batch)
