"""The evaluation's Ray Data stage: one sample's video (real or generated) -> everything the metrics need of it.

    ds.map_batches(MeasureVideos, fn_constructor_kwargs={"settings": settings.to_json(), ...},
                   compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1, batch_size=4)

A row names a video: ``side`` "real" (a key of the pixel shards) or "fake" (a generation folder), the cameras to
keep (a generation's rig, which may be fewer than the sample's), and the measurements wanted of it. The actor
loads the feature networks once; per video it decodes every camera, picks the frames (``frames_per_video`` per
camera, spread evenly, or "all"), the FVD clips (``clips_per_video`` per camera of ``fvd_clip_frames`` frames)
and FVMD's 16-frame clips, resizes them to a protocol's evaluation size where ``frame_sizes`` names one for the
metric (both sides alike), and returns, as one ``npz`` blob:

    <metric>            (n, D) float32 features of the frames (fdd, fid) or clips (fvd, fvmd)
    <metric>.camera     (n,) index into ``cameras``: which camera each feature row came from
    cameras             (N,) the camera names
    iou.inter / iou.union   (categories,) pixel counts of the conditioning boxes vs what the segmenter finds
    motion              (2,) apparent ego speed (m/s) and yaw rate (rad/s) of the video
    command             (2,) the sample's mean commanded speed (m/s) and curvature (1/m)

A video that cannot be read or measured becomes a row with ``status`` "failed" and the reason, never a failed
job; the driver counts it in the report.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from pipelines.evaluation.samples import (SampleError, ShardIndex, clip_starts, frame_indices, generated_video,
                                          real_video, resize_frames)

FRAME_METRICS = ("fdd", "fid")       # Fréchet distances over per-frame features
CLIP_METRICS = ("fvd",)              # over clip features from a network (fvd_clip_frames long)
MOTION_METRIC = "fvmd"               # over 16-frame clip motion features from a tracker (the FVMD paper's length)
CLIP_FRAMES = 16


@dataclass(frozen=True)
class Settings:
    """What is measured and with which networks; identical for every actor and for the cache's key."""
    networks: dict[str, str] = field(default_factory=dict)          # metric -> local path (fdd, fid, fvd, iou)
    resolutions: dict[str, list[int]] = field(default_factory=dict)  # metric -> [H, W] (default: the metric's own)
    tracker: str = "lucas-kanade"                                    # FVMD's point tracker: name or local path
    fvmd_cells: int = 2
    frames_per_video: int | str = 4                                  # or "all": every frame of every camera
    clips_per_video: int = 1
    fvd_clip_frames: int = CLIP_FRAMES
    frame_sizes: dict[str, list[int]] = field(default_factory=dict)  # metric -> [H, W] frames are first resized to
    batch_size: int = 16

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        return cls(**data)


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def commanded(meta: dict) -> np.ndarray:
    """The window's mean commanded speed and curvature, from the sample json's ``ego``."""
    ego = meta.get("ego") or {}
    speed, curvature = np.asarray(ego.get("speed", []), float), np.asarray(ego.get("curvature", []), float)
    if speed.size == 0 or curvature.size == 0:
        raise SampleError(f"sample {meta.get('key')!r}: its json has no ego speed / curvature")
    return np.array([speed.mean(), curvature.mean()])


class MeasureVideos:
    """Callable Ray Data stage (an actor: the networks load once). Rows: ``key``, ``side``, ``tag``, ``folder``
    (fake), ``cameras`` (JSON list of names, or "" for all), ``wants`` (comma list of fdd, fid, fvd, fvmd, iou,
    action) -> ``key``, ``side``, ``tag``, ``status`` ("ok" | "failed"), ``detail``, ``result`` (npz bytes)."""

    def __init__(self, settings: dict, shards: str, latents: str, split: str, device: str = "cpu",
                 num_threads: int | None = None) -> None:
        import torch

        from gaia2.evaluation.features import load_extractor
        from gaia2.evaluation.fvmd import load_tracker

        if num_threads and device == "cpu":
            torch.set_num_threads(num_threads)
        self.s = Settings.from_json(settings)
        self.device = device
        self.extractors = {m: load_extractor(m, p, device, tuple(self.s.resolutions[m]) if m in self.s.resolutions
                                             else None, self.s.batch_size, clip_frames=self.s.fvd_clip_frames)
                           for m, p in self.s.networks.items() if m in FRAME_METRICS + CLIP_METRICS}
        self.tracker = load_tracker(self.s.tracker)
        self.segmenter = None
        if "iou" in self.s.networks:
            from gaia2.evaluation.agent_iou import load_segmenter

            self.segmenter = load_segmenter(self.s.networks["iou"], device)
        self.real = ShardIndex(shards, split)
        self.conditioning = ShardIndex(latents, split)

    # ------------------------------------------------------------------------------------------ one video
    def measure(self, key: str, side: str, folder: str, cameras: list[str], wants: list[str]) -> dict:
        video = real_video(self.real, key) if side == "real" else generated_video(folder, key)
        names = [c["name"] for c in video.cameras]
        if cameras:
            missing = [c for c in cameras if c not in names]
            if missing:
                raise SampleError(f"{side} video of {key!r}: no camera {missing} (it has {names})")
            keep = [names.index(c) for c in cameras]
            frames, records = video.frames[keep], [video.cameras[i] for i in keep]
        else:
            frames, records, cameras = video.frames, video.cameras, names
        n, f = frames.shape[:2]
        out: dict[str, np.ndarray] = {"cameras": np.asarray(cameras, dtype=str)}
        picks = frame_indices(f, self.s.frames_per_video)
        for metric in wants:
            size = self.s.frame_sizes.get(metric)
            if metric in FRAME_METRICS:
                items = frames[:, picks].reshape(-1, *frames.shape[2:])
                items = items if size is None else resize_frames(items, size)
                out[metric] = self.extractors[metric].extract(items).astype(np.float32)
                out[f"{metric}.camera"] = np.repeat(np.arange(n), len(picks))
            elif metric in CLIP_METRICS + (MOTION_METRIC,):
                length = CLIP_FRAMES if metric == MOTION_METRIC else self.s.fvd_clip_frames
                starts = clip_starts(f, length, self.s.clips_per_video)
                if not starts:
                    raise SampleError(f"{side} video of {key!r}: {f} frames, fewer than the {length} of a "
                                      f"{metric.upper()} clip")
                clips = np.stack([frames[c, s:s + length] for c in range(n) for s in starts])
                clips = clips if size is None else resize_frames(clips, size)
                if metric == MOTION_METRIC:
                    from gaia2.evaluation.fvmd import video_features

                    feats = video_features(list(clips), self.tracker, self.s.fvmd_cells, length)
                else:
                    feats = self.extractors[metric].extract(clips)
                out[metric] = np.asarray(feats, np.float32)
                out[f"{metric}.camera"] = np.repeat(np.arange(n), len(starts))
            elif metric == "iou":
                out.update(self._iou(key, frames, records, cameras))
            elif metric == "action":
                from gaia2.evaluation.action import apparent_motion

                meta = self.conditioning.members(key, ("json",))["json"]
                sample = json.loads(meta)
                rate = float(sample.get("frame_rate") or video.meta.get("rig", {}).get("frame_rate"))
                out["motion"] = np.asarray(apparent_motion(frames, records, rate), np.float64)
                out["command"] = commanded(sample)
            else:
                raise ValueError(f"measurement {metric!r}: not one of fdd, fid, fvd, fvmd, iou, action")
        return out

    def _iou(self, key: str, frames: np.ndarray, records: list[dict], cameras: list[str]) -> dict[str, np.ndarray]:
        """Pixel counts of the conditioning boxes (the latent shard's, which the generation was conditioned on)
        against what the segmenter finds, over every frame of the kept cameras."""
        from gaia2.evaluation.agent_iou import conditioning_masks, iou_counts
        from pipelines.shards.detect import cameras_from_json

        meta = json.loads(self.conditioning.members(key, ("json",))["json"])
        names = [c["name"] for c in meta["cameras"]]
        keep = [names.index(c) for c in cameras]
        boxes = self.conditioning.array(key, "boxes.npy")[:, keep]          # (F, N, B, 13)
        valid = self.conditioning.array(key, "boxes_valid.npy")[:, keep]    # (F, N, B)
        f = min(len(boxes), frames.shape[1])
        h, w = frames.shape[2:4]
        cams = cameras_from_json(json.dumps([_at_size(r, h, w) for r in records]))
        ts = np.asarray(meta.get("timestamps", np.arange(f)), float)[:f]
        found = self.segmenter.segment(np.ascontiguousarray(frames[:, :f]), cams, ts)       # (N, F, H, W)
        wanted = conditioning_masks(boxes[:f], valid[:f], h, w).transpose(1, 0, 2, 3)         # (N, F, H, W)
        inter, union = iou_counts(wanted, found)
        return {"iou.inter": inter.astype(np.int64), "iou.union": union.astype(np.int64)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        status, detail, result = [], [], []
        for i in range(n):
            key, side = str(batch["key"][i]), str(batch["side"][i])
            cameras = json.loads(str(batch["cameras"][i]) or "[]")
            wants = [w for w in str(batch["wants"][i]).split(",") if w]
            try:
                arrays = self.measure(key, side, str(batch["folder"][i]), cameras, wants)
                status.append("ok"), detail.append(""), result.append(pack(arrays))
            except Exception as err:   # one unreadable video is a counted failure, not a failed job
                status.append("failed"), detail.append(f"{type(err).__name__}: {err}"), result.append(b"")
        return {"key": batch["key"], "side": batch["side"], "tag": batch["tag"],
                "status": np.asarray(status, dtype=object), "detail": np.asarray(detail, dtype=object),
                "result": np.asarray(result, dtype=object)}


def _at_size(record: dict, height: int, width: int) -> dict:
    """A camera record rescaled to frames of ``height`` x ``width`` (intrinsics scale with the image)."""
    sx, sy = width / float(record["width"]), height / float(record["height"])
    fx, fy, cx, cy = (float(v) for v in record["intrinsics"])
    return {**record, "width": width, "height": height, "intrinsics": [fx * sx, fy * sy, cx * sx, cy * sy]}
