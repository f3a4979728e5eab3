"""The two videos evaluation compares for one validation sample: the real one (pixel shards) and a generation.

    index = ShardIndex("shards")                       # key -> tar, from the build's index/*.json
    real = real_video(index, "drive0-clip1-w0002")     # Video: frames (N, F, H, W, 3), the sample's json
    fake = generated_video("out/generations/model/drive0-clip1-w0002")
    frames, clips = frame_indices(F, 4), clip_indices(F, 16)

Both are read the same way (each camera's mp4 decoded whole, at the size it was written), so the features of the
two sides differ only by what is in them.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass

import numpy as np


class SampleError(ValueError):
    """A sample that cannot be read: names the sample, the file and what is wrong."""


@dataclass
class Video:
    key: str
    frames: np.ndarray       # (N, F, H, W, 3) uint8, the cameras in ``cameras`` order
    cameras: list[dict]      # the sample json's camera records (name, width, height, intrinsics, extrinsics, ...)
    meta: dict               # the sample json (timestamps, ego, ...), or the generation's spec.json


class ShardIndex:
    """Key -> tar file of a shard directory (pixel or latent shards), from its ``index/<split>-<shard>.json``."""

    def __init__(self, root: str, split: str | None = None) -> None:
        self.root = root
        self.where: dict[str, str] = {}
        for path in sorted(glob.glob(os.path.join(root, "index", "*.json"))):
            name, _, shard = os.path.basename(path)[:-len(".json")].partition("-")
            if split is not None and name != split:
                continue
            with open(path) as f:
                for row in json.load(f).get("samples", []):
                    self.where[str(row["key"])] = os.path.join(root, name, f"{shard}.tar")
        if not self.where:
            raise SampleError(f"shards {root!r}: no index/*.json with samples{f' of split {split!r}' if split else ''} "
                              f"(expected a gaia2 shards build or encode-latents output)")

    def keys(self) -> list[str]:
        return sorted(self.where)

    def members(self, key: str, names: tuple[str, ...] | None = None) -> dict[str, bytes]:
        """``{member: bytes}`` of sample ``key`` (members named ``<key>.<member>``; all of them, or ``names``)."""
        tar = self.where.get(key)
        if tar is None:
            raise SampleError(f"sample {key!r}: not in the shards at {self.root!r}")
        out = {}
        try:
            with tarfile.open(tar) as t:
                for info in t:
                    k, _, member = info.name.partition(".")
                    if k == key and (names is None or member in names):
                        out[member] = t.extractfile(info).read()
        except (OSError, tarfile.TarError) as err:
            raise SampleError(f"sample {key!r}: {tar}: {err}") from None
        missing = [m for m in names or ("json",) if m not in out]
        if missing:
            raise SampleError(f"sample {key!r}: {tar} has no member {', '.join(f'{key}.{m}' for m in missing)}")
        return out

    def array(self, key: str, member: str) -> np.ndarray:
        return np.load(io.BytesIO(self.members(key, (member,))[member]), allow_pickle=False)


def decode_mp4(data: bytes, what: str) -> np.ndarray:
    """mp4 bytes -> (F, H, W, 3) uint8, every frame at the size it was written."""
    from gaia2.video.decode import open_video

    try:
        vr = open_video(bytes(data), what)
        return vr.get_batch(list(range(len(vr)))).asnumpy()
    except Exception as err:   # a broken video is this sample's error, not the job's
        raise SampleError(f"{what}: cannot decode ({type(err).__name__}: {err})") from None


def _stack(videos: list[np.ndarray], what: str) -> np.ndarray:
    shapes = {v.shape[1:] for v in videos}
    if len(shapes) != 1:
        raise SampleError(f"{what}: cameras of different sizes {sorted(shapes)}")
    f = min(len(v) for v in videos)
    return np.stack([v[:f] for v in videos])


def real_video(index: ShardIndex, key: str) -> Video:
    """Sample ``key`` of pixel shards: every camera's frames and its json."""
    raw = index.members(key)
    if "json" not in raw:
        raise SampleError(f"sample {key!r}: no {key}.json in {index.where.get(key)}")
    meta = json.loads(raw["json"])
    cameras = meta.get("cameras") or []
    missing = [c["name"] for c in cameras if f"{c['name']}.mp4" not in raw]
    if not cameras or missing:
        raise SampleError(f"sample {key!r}: {index.where[key]} lacks the videos of cameras "
                          f"{missing or '(none listed in its json)'} (is it a pixel shard build, not latents?)")
    frames = _stack([decode_mp4(raw[f"{c['name']}.mp4"], f"sample {key!r} camera {c['name']}") for c in cameras],
                    f"sample {key!r}")
    return Video(key, frames, cameras, meta)


def generated_video(folder: str, key: str | None = None) -> Video:
    """A generation folder (``cameras/<name>.mp4`` + ``spec.json``) -> its frames in the rig's camera order."""
    try:
        with open(os.path.join(folder, "spec.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError) as err:
        raise SampleError(f"generation {folder}: no readable spec.json ({err})") from None
    names = [c["name"] for c in spec.get("rig", {}).get("cameras", [])]
    if not names:
        names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(folder, "cameras", "*.mp4")))
    videos = []
    for name in names:
        path = os.path.join(folder, "cameras", f"{name}.mp4")
        try:
            with open(path, "rb") as f:
                videos.append(decode_mp4(f.read(), path))
        except OSError as err:
            raise SampleError(f"generation {folder}: {err}") from None
    return Video(key or os.path.basename(folder), _stack(videos, f"generation {folder}"), spec.get("rig", {}).get(
        "cameras", []), spec)


def frame_indices(frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``frames`` (all of them when there are fewer)."""
    if count >= frames:
        return np.arange(frames)
    return np.unique(np.round(np.linspace(0, frames - 1, count)).astype(int))


def clip_starts(frames: int, length: int, count: int) -> list[int]:
    """Starts of up to ``count`` non-overlapping ``length``-frame clips over ``frames`` (none when too short)."""
    n = min(count, frames // length)
    if n <= 0:
        return []
    return [int(s) for s in np.round(np.linspace(0, frames - length, n)).astype(int)]
