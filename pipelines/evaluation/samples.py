"""The two videos evaluation compares for one validation sample: the real one (pixel shards) and a generation.

    index = ShardIndex("shards")                       # key -> tar, from the build's index/*.json (or s3://...)
    real = real_video(index, "drive0-clip1-w0002")     # Video: frames (N, F, H, W, 3), the sample's json
    fake = generated_video("out/generations/model/drive0-clip1-w0002")
    frames, starts = frame_indices(F, 4), clip_starts(F, 16, 1)   # or frame_indices(F, "all")

Both are read the same way (each camera's mp4 decoded whole, at the size it was written), so the features of the
two sides differ only by what is in them. Shards are read through ``gaia2.storage`` (a local directory or an
object-storage URI); a generation folder is local (the jobs write their generations on a local disk).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass

import numpy as np

from gaia2 import storage


class SampleError(ValueError):
    """A sample that cannot be read: names the sample, the file and what is wrong."""


@dataclass
class Video:
    key: str
    frames: np.ndarray       # (N, F, H, W, 3) uint8, the cameras in ``cameras`` order
    cameras: list[dict]      # the sample json's camera records (name, width, height, intrinsics, extrinsics, ...)
    meta: dict               # the sample json (timestamps, ego, ...), or the generation's spec.json


class ShardIndex:
    """Key -> tar of a shard directory (pixel or latent shards), from its ``index/<split>-<shard>.json``.

    ``root`` is a local directory or an object-storage URI (``gaia2.storage``). A tar's member table (each
    member's offset and size) is read once, from the tar headers, the first time one of its samples is asked
    for; a sample's members are then read by offset: a few ranged reads on object storage, not the whole tar.
    """

    def __init__(self, root: str, split: str | None = None, what: str = "shards") -> None:
        """what: the noun its errors begin with (``shards``, ``latents``)."""
        self.root, self.what = storage.absolute(root), what
        self.where: dict[str, str] = {}      # key -> its tar (a path or URI)
        self.split: dict[str, str] = {}      # key -> its split
        self.clip: dict[str, str] = {}       # key -> its source clip (e.g. a nuScenes scene), where the index says
        self.window: dict[str, int] = {}     # key -> its window's index within that clip
        self._tables: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}   # tar -> key -> member -> (offset, size)
        where = storage.redact(self.root)
        index_dir = storage.join(self.root, "index")
        try:
            names = [n for n in storage.list_files(index_dir, recursive=False) if n.endswith(".json")]
            for name in names:
                split_name, _, shard = name[:-len(".json")].partition("-")
                if split is not None and split_name != split:
                    continue
                rows = json.loads(storage.read_bytes(storage.join(index_dir, name))).get("samples", [])
                tar = storage.join(self.root, split_name, f"{shard}.tar")
                for row in rows:
                    self.where[str(row["key"])] = tar
                    self.split[str(row["key"])] = split_name
                    if row.get("clip_id") is not None:
                        self.clip[str(row["key"])] = str(row["clip_id"])
                        self.window[str(row["key"])] = int(row.get("window") or 0)
        except (OSError, ValueError) as err:   # StorageError, a refused request, an unreadable index
            raise SampleError(f"{what} {where!r}: cannot be read ({storage.redact(str(err))})") from None
        if not self.where:
            of = f" of split {split!r}" if split else ""
            raise SampleError(f"{what} {where!r}: no index/*.json with samples{of} (expected a gaia2 shards build or "
                              f"encode-latents output)")

    def keys(self) -> list[str]:
        return sorted(self.where)

    def _table(self, tar: str) -> dict[str, dict[str, tuple[int, int]]]:
        if tar not in self._tables:
            table: dict[str, dict[str, tuple[int, int]]] = {}
            # Buffered: the headers come in 1 MiB reads, not one request per 512-byte header.
            with storage.open_input(tar) as raw, io.BufferedReader(raw, 1 << 20) as f, \
                    tarfile.open(fileobj=f) as t:
                for info in t:
                    if info.isfile():
                        k, _, member = info.name.partition(".")
                        table.setdefault(k, {})[member] = (info.offset_data, info.size)
            self._tables[tar] = table
        return self._tables[tar]

    def members(self, key: str, names: tuple[str, ...] | None = None, limit: int | None = None) -> dict[str, bytes]:
        """``{member: bytes}`` of sample ``key`` (members named ``<key>.<member>``; all of them, or ``names``);
        ``limit``: only each member's first bytes (an ``.npy`` header)."""
        tar = self.where.get(key)
        if tar is None:
            raise SampleError(f"sample {key!r}: not in the {self.what} at {storage.redact(self.root)!r}")
        out = {}
        try:
            wanted = {m: at for m, at in self._table(tar).get(key, {}).items() if names is None or m in names}
            with storage.open_input(tar) as f:
                for member, (offset, size) in sorted(wanted.items(), key=lambda kv: kv[1]):
                    size = size if limit is None else min(size, limit)
                    f.seek(offset)
                    out[member] = f.read(size)
                    if len(out[member]) != size:
                        raise tarfile.TarError(f"{key}.{member}: {len(out[member])} of {size} bytes")
        except (OSError, tarfile.TarError) as err:
            raise SampleError(f"sample {key!r}: {storage.redact(tar)}: {storage.redact(str(err))}") from None
        missing = [m for m in names or ("json",) if m not in out]
        if missing:
            raise SampleError(f"sample {key!r}: {storage.redact(tar)} has no member "
                              f"{', '.join(f'{key}.{m}' for m in missing)}")
        return out

    def array(self, key: str, member: str) -> np.ndarray:
        return np.load(io.BytesIO(self.members(key, (member,))[member]), allow_pickle=False)


def unreadable(location: str) -> str | None:
    """Why ``location`` (a local path or an object-storage URI) cannot be a shard directory, or None: what a
    config check says after the field's name."""
    try:
        return None if storage.is_dir(location) else f"{storage.redact(location)!r} is not a directory"
    except OSError as err:   # a bad URI, an unknown bucket, a refused request
        return f"{storage.redact(location)!r} cannot be read ({storage.redact(str(err))})"


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
        raise SampleError(f"sample {key!r}: no {key}.json in {storage.redact(index.where.get(key, ''))}")
    meta = json.loads(raw["json"])
    cameras = meta.get("cameras") or []
    missing = [c["name"] for c in cameras if f"{c['name']}.mp4" not in raw]
    if not cameras or missing:
        raise SampleError(f"sample {key!r}: {storage.redact(index.where[key])} lacks the videos of cameras "
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


def first_windows(keys: list[str], clip: dict[str, str], window: dict[str, int], per_clip: int) -> list[str]:
    """Of ``keys``, the first ``per_clip`` windows of each source clip (by window index, then key), in key order:
    one sample per nuScenes validation scene with ``per_clip`` 1. A key without a clip is its own clip."""
    order = sorted(keys, key=lambda k: (clip.get(k, k), window.get(k, 0), k))
    taken: dict[str, int] = {}
    kept = set()
    for k in order:
        c = clip.get(k, k)
        if taken.get(c, 0) < per_clip:
            taken[c] = taken.get(c, 0) + 1
            kept.add(k)
    return [k for k in keys if k in kept]


def frame_indices(frames: int, count: int | str) -> np.ndarray:
    """``count`` frame indices spread evenly over ``frames`` (all of them when there are fewer, or ``count`` is
    "all")."""
    if count == "all" or count >= frames:
        return np.arange(frames)
    return np.unique(np.round(np.linspace(0, frames - 1, count)).astype(int))


def clip_starts(frames: int, length: int, count: int) -> list[int]:
    """Starts of up to ``count`` non-overlapping ``length``-frame clips over ``frames`` (none when too short)."""
    n = min(count, frames // length)
    if n <= 0:
        return []
    return [int(s) for s in np.round(np.linspace(0, frames - length, n)).astype(int)]


def resize_frames(frames: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3) uint8 at ``size`` = (h, w): antialiased bilinear (area-like when
    shrinking, as a protocol's real frames are brought to its generation resolution); unchanged at that size."""
    import torch
    import torch.nn.functional as F

    h, w = (int(v) for v in size)
    if frames.shape[-3:-1] == (h, w):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty((len(flat), h, w, 3), np.uint8)
    for i in range(0, len(flat), 16):   # in float32 a chunk at a time: every frame of a video at once is GBs
        x = torch.from_numpy(np.ascontiguousarray(flat[i:i + 16])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + 16] = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out.reshape(*frames.shape[:-3], h, w, 3)
