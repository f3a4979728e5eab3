"""Tokenizer training data on Ray Data: WebDataset shards -> one uint8 clip per camera and window.

Every camera of every sample becomes a training row (each camera stream is encoded independently,
as in the paper; the paper draws one camera at random per sample, which over an epoch sees a sixth
of the views this does). Videos are decoded by Ray Data tasks at the tokenizer's resolution, so the
training loop only crops in time and converts to float. With ``preserve_order`` (set by the job's
DataConfig) rows arrive in shard order, which together with a seeded local shuffle makes an epoch's
batches reproducible, and so lets a resumed run replay its data position exactly.

``weighted_clip_dataset`` is the training split as ``data.weighted`` reads it: the epoch's samples drawn in
proportion to the manifest's weights (``pipelines/weighted.py``), each drawn sample giving all its cameras.
"""

from __future__ import annotations

import json

import numpy as np
import ray

from gaia2.tokenizer.clips import sample_videos
from pipelines import weighted
from pipelines.splits import DataError, first_sample, split_counts, split_files

__all__ = ["DataError", "PRODUCED_BY", "clip_dataset", "decode_clips", "split_files", "split_summary",
           "weighted_clip_dataset"]


PRODUCED_BY = "gaia2 shards build"


def split_summary(shards: str, split: str) -> dict:
    """``{"samples", "cameras", "window_frames"}`` of ``split``: the sample count from the build's
    manifest, camera count and window length from its first sample (all windows of a build have one length)."""
    first = first_sample(split_files(shards, split, PRODUCED_BY)[0], ("json",))["json"]
    return {"samples": split_counts(shards, PRODUCED_BY)[split], "cameras": len(first["cameras"]),
            "window_frames": len(first["timestamps"])}


def decode_clips(batch: dict[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """WebDataset rows (``json`` bytes + ``<camera>.mp4`` bytes) -> one row per camera:
    ``frames`` (T, H, W, 3) uint8, ``key``, ``camera``. A sample that fails to decode is an error that
    names it: shards are checked when built (``gaia2 shards verify``), so this means corruption."""
    frames, keys, cameras = [], [], []
    columns = list(batch)
    for i in range(len(batch["json"])):
        row = {c: batch[c][i] for c in columns if isinstance(batch[c][i], (bytes, bytearray))}
        row["json"] = json.loads(row["json"])
        key = row["json"].get("key", batch["__key__"][i] if "__key__" in batch else "?")
        try:
            videos = sample_videos(row, (height, width))
        except Exception as err:
            url = batch["__url__"][i] if "__url__" in batch else "?"
            raise DataError(f"sample {key!r} in {url}: {err}") from err
        for name, clip in videos:
            frames.append(clip)
            keys.append(key)
            cameras.append(name)
    lengths = {f.shape[0] for f in frames}
    if len(lengths) > 1:
        raise DataError(f"samples {sorted(set(keys))} have windows of different lengths {sorted(lengths)}")
    return {"frames": np.stack(frames) if frames else np.zeros((0, 0, height, width, 3), np.uint8),
            "key": np.array(keys, dtype=object), "camera": np.array(cameras, dtype=object)}


def _members(name: str) -> bool:
    return name == "json" or name.endswith(".mp4")


def clip_dataset(files: list[str], height: int, width: int, decode_cpus: float,
                 decode_batch: int) -> ray.data.Dataset:
    """Rows ``{frames (T, H, W, 3) uint8, key, camera}`` from ``files`` (read and decoded on Ray Data)."""
    ds = ray.data.read_webdataset(files, suffixes=_members, decoder=None, num_cpus=decode_cpus)
    return ds.map_batches(decode_clips, fn_kwargs={"height": height, "width": width}, batch_size=decode_batch,
                          batch_format="numpy", num_cpus=decode_cpus)


def weighted_clip_dataset(shards: str, height: int, width: int, decode_cpus: float, decode_batch: int, seed: int,
                          epoch: int, rank: int = 0, world: int = 1, split: str = "train") -> ray.data.Dataset:
    """Worker ``rank``'s rows of weighted ``epoch`` (``pipelines.weighted.epoch_dataset``), in draw order:
    ``{frames (T, H, W, 3) uint8, key, camera}``, one row per camera of each drawn sample."""
    ds = weighted.epoch_dataset(shards, split, PRODUCED_BY, _members, seed, epoch, rank, world, decode_cpus,
                                decode_batch)
    return weighted.ordered(ds.map_batches(decode_clips, fn_kwargs={"height": height, "width": width},
                                           batch_size=decode_batch, batch_format="numpy", num_cpus=decode_cpus))
