"""The Ray Data stages of latent encoding: read -> decode -> encode (``EncodeLatents``) -> stage.

The task functions live here, at module level, with torch imported only inside them: Ray workers
import this module by reference and the read/pack tasks never load torch. Each sample is one encoder
call (its N cameras are the batch), so its latents do not depend on which samples Ray Data grouped
together, and the ``sample`` mode's noise comes from a generator seeded by (seed, key).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from typing import TYPE_CHECKING, Iterator

import numpy as np

from gaia2 import storage
from gaia2.config.shards import RetryConfig
from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.sample import npy_bytes, tar_archive, tar_members
from pipelines.rejects import Reject, batch_rejects, map_rows, reject_columns
from pipelines.retry import RetriesExhausted, retrying_batched
from pipelines.shards.common import object_column
from pipelines.shards.write import is_staged, shard_path, stage_sample
from pipelines.tokenizer.latents_config import read_samples

if TYPE_CHECKING:
    import torch

LATENTS_MEMBER = "latents.npy"
VIDEO_SUFFIX = ".mp4"


def sample_seed(seed: int, key: str) -> int:
    """The sample mode's noise seed for one sample: a hash of (seed, key), in [0, 2**63)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1



def read_shard_batch(batch: dict[str, np.ndarray], shards_dir: str, out_dir: str,
                     chunk: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task: input shards (``shard``, ``keys_json``: the manifest's keys of it) -> one row per
    sample not yet staged: ``members`` (its tar member bytes), in blocks of ``chunk`` samples.

    A manifest key missing from the tar becomes a rejected row (stage "read"); a tar key missing from the
    manifest, or samples out of key order (the output is assembled in key order), is an inconsistent
    build and raises.
    """
    def rows(items: list[tuple[str, str, bytes, Reject | None]]) -> dict[str, np.ndarray]:
        shard_, key_, members_, rejects = zip(*items)
        return {"shard": np.asarray(shard_, dtype=object), "key": np.asarray(key_, dtype=object),
                "members": np.asarray(members_, dtype=object)} | reject_columns(rejects)

    for shard, keys_json in zip(batch["shard"], batch["keys_json"]):
        shard, expected = str(shard), set(json.loads(str(keys_json)))
        pending: list[tuple[str, str, bytes, Reject | None]] = []
        found: list[str] = []
        for key, members in read_samples(shard_path(shards_dir, shard)):
            if key not in expected:
                raise ValueError(f"{shards_dir}/{shard}.tar: sample {key} is not in manifest.parquet; the shard "
                                 f"directory is inconsistent (check it with `gaia2 shards verify`)")
            if found and key < found[-1]:
                raise ValueError(f"{shards_dir}/{shard}.tar: sample {key} comes after {found[-1]}; shards must "
                                 f"hold their samples in key order")
            found.append(key)
            if not is_staged(out_dir, shard, key):
                pending.append((shard, key, tar_members(members), None))
            if len(pending) >= chunk:
                yield rows(pending)
                pending = []
        for key in sorted(expected - set(found)):
            if not is_staged(out_dir, shard, key):
                missing = Reject("read", Reason.INVALID_RECORD.value,
                                 f"sample {key} is in manifest.parquet but not in {shard}.tar")
                pending.append((shard, key, b"", missing))
        if pending:
            yield rows(pending)


def split_sample(key: str, fragment: bytes) -> tuple[dict, dict[str, bytes], bytes, bytes]:
    """A sample's tar members -> (json, {camera: mp4 bytes}, head, tail): ``head`` and ``tail`` are the
    other members, as tar member bytes, before and after the first video (where the latents go)."""
    meta, videos, head, tail = None, {}, [], []
    with tarfile.open(fileobj=io.BytesIO(tar_archive([fragment]))) as tar:
        for info in tar:
            data = tar.extractfile(info).read()
            ext = info.name[len(key) + 1:]
            if ext.endswith(VIDEO_SUFFIX):
                videos[ext[: -len(VIDEO_SUFFIX)]] = data
                continue
            if ext == "json":
                meta = json.loads(data)
            (tail if videos else head).append((info.name, data))
    if meta is None:
        raise ClipError(Reason.INVALID_RECORD, f"sample {key}: no {key}.json member")
    return meta, videos, tar_members(head), tar_members(tail)


def decode_sample(key: str, fragment: bytes, height: int, width: int,
                  window: int) -> tuple[np.ndarray, bytes, bytes]:
    """A sample's tar members -> (frames (N, T, H, W, 3) uint8 in the json's camera order, head, tail).

    Raises ``ClipError`` (its reason goes to rejects.parquet) for a sample that cannot be used.
    """
    from gaia2.tokenizer.clips import sample_videos

    meta, videos, head, tail = split_sample(key, fragment)
    row = {"json": meta, **{f"{cam}.mp4": data for cam, data in videos.items()}}
    try:
        cams = sample_videos(row, (height, width))
    except KeyError as err:
        raise ClipError(Reason.MISSING_CAMERA, str(err.args[0])) from None
    counts = {name: len(frames) for name, frames in cams}
    if set(counts.values()) != {window}:
        raise ClipError(Reason.FRAME_COUNT_MISMATCH, f"sample {key}: frames per camera {counts}, expected {window}")
    return np.stack([frames for _, frames in cams]), head, tail


def decode_batch(batch: dict[str, np.ndarray], height: int, width: int, window: int,
                 retry: RetryConfig | None = None) -> dict[str, np.ndarray]:
    """Ray Data task: ``members`` -> ``frames`` (N, T, H, W, 3) uint8, ``head``, ``tail``; a sample that
    fails is rejected (stage "decode", empty frames) and goes on to the rejects: at once for a broken one,
    after ``retry.attempts`` tries (None: RetryConfig's defaults) for a transient error (pipelines/retry.py)."""
    def decode(i: int) -> tuple[np.ndarray, bytes, bytes]:
        return decode_sample(str(batch["key"][i]), bytes(batch["members"][i]), height, width, window)

    n = len(batch["key"])
    empty = (np.zeros((0, window, height, width, 3), np.uint8), b"", b"")
    decoded, rejects = map_rows(decode, n, "decode", Reason.DECODE_FAILED, empty, batch_rejects(batch, n),
                                retry=retry or RetryConfig())
    return {"shard": batch["shard"], "key": batch["key"], "frames": object_column([f for f, _, _ in decoded]),
            "head": np.asarray([h for _, h, _ in decoded], dtype=object),
            "tail": np.asarray([t for _, _, t in decoded], dtype=object)} | reject_columns(rejects)


class EncodeLatents:
    """Callable Ray Data stage: ``frames`` (N, T, H, W, 3) uint8 -> ``latents`` (T/f, N, L, H/s, W/s) float32.

    Used as an actor pool, the tokenizer loaded once per actor:
        ds.map_batches(EncodeLatents, fn_constructor_kwargs={"path": ..., "mode": "sample", "seed": 0,
                       "device": "cuda"}, batch_size=4, compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)
    Out of memory halves the cameras per encoder call (down to 1); a transient error is tried
    ``retry.attempts`` times (None: RetryConfig's defaults; pipelines/retry.py), then the sample is rejected
    (stage "encode"). Other encoder failures are not per-sample problems (a bad device, a bug): they raise.
    """

    def __init__(self, path: str, mode: str = "sample", seed: int = 0, device: str = "cpu",
                 num_threads: int | None = None, retry: RetryConfig | None = None):
        import torch

        from gaia2.tokenizer.export import load_tokenizer

        if mode not in ("sample", "mean"):
            raise ValueError(f"EncodeLatents: mode must be 'sample' or 'mean', got {mode!r}")
        if num_threads and device == "cpu":
            torch.set_num_threads(num_threads)
        self.model = load_tokenizer(path, device)
        self.device, self.mode, self.seed = torch.device(device), mode, seed
        self.retry = retry or RetryConfig()

    def encode_moments(self, frames: np.ndarray, cameras_per_call: int) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (N, T, H, W, 3) uint8 -> (mean, log_std), each (N, L, T/f, H/s, W/s) float32 on the CPU,
        ``cameras_per_call`` cameras per encoder call (the encoder sees each camera on its own)."""
        import torch

        from gaia2.tokenizer.clips import to_model_input

        means, log_stds = [], []
        with torch.no_grad():
            for s in range(0, len(frames), cameras_per_call):
                # uint8 crosses to the device (4x less than float), converted there.
                x = torch.from_numpy(np.ascontiguousarray(frames[s:s + cameras_per_call])).to(self.device)
                mean, log_std = self.model.encode(to_model_input(x))     # each (n, L, T/f, H/s, W/s)
                means.append(mean.float().cpu())
                log_stds.append(log_std.float().cpu())
        return torch.cat(means), torch.cat(log_stds)

    def encode_sample(self, key: str, frames: np.ndarray) -> np.ndarray:
        """frames (N, T, H, W, 3) uint8 -> latents (T/f, N, L, H/s, W/s) float32; one encoder call, or
        fewer cameras per call after out of memory (``retrying_batched``)."""
        import torch
        from einops import rearrange

        from gaia2.tokenizer.model import Tokenizer

        mean, log_std = retrying_batched(lambda n: self.encode_moments(frames, n), len(frames), self.retry)
        with torch.no_grad():
            if self.mode == "sample":
                # Noise drawn on the CPU from a per-sample generator: the same on any device and batching.
                gen = torch.Generator().manual_seed(sample_seed(self.seed, key))
                latents = Tokenizer.sample_latents(mean, log_std, gen)
            else:
                latents = mean
        return np.ascontiguousarray(rearrange(latents, "n l t h w -> t n l h w").numpy(), dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rejects = batch_rejects(batch, len(batch["key"]))
        latents = []
        for i, (key, frames) in enumerate(zip(batch["key"], batch["frames"])):
            latent = np.zeros((0,) * 5, np.float32)
            if rejects[i] is None:
                try:
                    latent = self.encode_sample(str(key), frames)
                except RetriesExhausted as err:   # the sample is left out; anything else stops the job
                    rejects[i] = Reject.of("encode", err, Reason.DECODE_FAILED)
            latents.append(latent)
        return {"shard": batch["shard"], "key": batch["key"], "latents": object_column(latents),
                "head": batch["head"], "tail": batch["tail"]} | reject_columns(rejects)


def stage_latents_batch(batch: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """Ray Data task: stage each sample (head + ``<key>.latents.npy`` + tail) or its reject; passes on
    only the keys and rejects, so nothing heavy reaches the driver."""
    rejects = batch_rejects(batch, len(batch["key"]))
    for shard, key, head, latents, tail, reject in zip(batch["shard"], batch["key"], batch["head"],
                                                        batch["latents"], batch["tail"], rejects):
        key, sample = str(key), b""
        if reject is None:
            member = tar_members([(f"{key}.{LATENTS_MEMBER}", npy_bytes(np.asarray(latents, dtype=np.float32)))])
            sample = bytes(head) + member + bytes(tail)
        stage_sample(out_dir, str(shard), key, sample, reject)
    return {"key": np.asarray(batch["key"], dtype=object)} | reject_columns(rejects)


def scan_latent_shard(path: str) -> dict:
    """Ray task: a latent shard -> what the driver needs of its ``latents.npy`` members, each read once:

        {"shapes": {"3x5x16x4x8": count}, "moments": ChannelMoments.to_dict(), "error": None}

    The moments are per channel (axis 2 of (T', N, L, H', W')), float64 sums. A shard that cannot be measured
    (a sample without latents.npy, latents not float32 (T', N, L, H', W') or not finite, an unreadable tar)
    gives ``{"error": "<path>: why"}``: a value, so the driver reports every bad shard at once, one line each.
    """
    from gaia2.flow.stats import ChannelMoments, LatentStatsError   # imports torch (gaia2.flow): only here

    shapes: Counter = Counter()
    moments = ChannelMoments()
    keys, measured = set(), set()
    try:
        with storage.open_input(path) as f, tarfile.open(fileobj=f) as tar:   # a path or a URI
            for info in tar:
                if not info.isfile():
                    continue
                key = info.name.split(".", 1)[0]
                keys.add(key)
                if not info.name.endswith(f".{LATENTS_MEMBER}"):
                    continue
                latents = np.load(io.BytesIO(tar.extractfile(info).read()), allow_pickle=False)
                if latents.dtype != np.float32 or latents.ndim != 5:
                    raise LatentStatsError(f"{info.name} is {latents.dtype} {latents.shape}, expected float32 "
                                           f"(T', N, L, H', W')")
                try:
                    moments.add(latents)
                except LatentStatsError as err:
                    raise LatentStatsError(f"{info.name}: {err}") from None
                shapes["x".join(map(str, latents.shape))] += 1
                measured.add(key)
    except (LatentStatsError, tarfile.TarError, ValueError, OSError) as err:
        return {"error": f"{path}: {err}"}
    missing = sorted(keys - measured)
    if missing:
        return {"error": f"{path}: sample {missing[0]} has no {LATENTS_MEMBER} member ({len(missing)} of "
                         f"{len(keys)} samples lack one): not a latent shard (gaia2 encode-latents writes them)"}
    return {"shapes": dict(shapes), "moments": moments.to_dict(), "error": None}
