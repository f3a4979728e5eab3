"""Latent shards for world-model training: each shard sample's camera videos -> tokenizer latents.

    read (task per input shard, samples in chunks) -> decode (tasks: mp4 -> uint8 frames at the
    tokenizer's size) -> encode (actor pool: ``Tokenizer.encode``, GPUs if asked) -> pack + stage each
    sample (tasks) -> assemble each shard from its staged samples, in key order (task per shard)

Input: a shard build directory (``train/shard-NNNNNN.tar``, ``val/...``, ``manifest.parquet``).
Output directory:
    train/shard-NNNNNN.tar ...   same shard names and sample keys as the input, in key order like the input
                                 (pipelines/shards/write.py assembles shards so); ``<key>.json``,
                                 ``.boxes.npy``, ``.boxes_valid.npy``, ``.clip.npy`` copied unchanged; the
                                 ``<key>.<camera>.mp4`` members replaced by one ``<key>.latents.npy``:
                                 float32 (T_latent, N_cameras, L, H/s, W/s), cameras in the json's order
    index/<split>-shard-*.json   per-shard sidecar: samples, failures, bytes, SHA-256 (resume)
    manifest.parquet             the input's manifest rows of the samples written (all, unless some failed)
    rejects.parquet              one row per sample that failed: key, shard, split, clip_id, reason, detail
    latents.json                 report: tokenizer path/config, mode, seed, latent shapes, counts, seconds
    encode.json                  what the latents were made from; a rerun onto another is refused

Each sample is one encoder call (its N cameras are the batch), so its latents do not depend on
which samples Ray Data grouped together, and the ``sample`` mode's noise comes from a generator
seeded by (seed, key): the same inputs, tokenizer, mode, seed and device give byte-identical shards.
The task functions live here, at module level, with torch imported only inside them: Ray workers
import this module by reference and the read/pack tasks never load torch.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError

from gaia2.config.base import ConfigError, StrictModel, format_validation_error
from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.sample import npy_bytes, tar_archive, tar_members
from pipelines.shards.common import object_column
from pipelines.shards.write import (SAMPLE_FIELDS, STAGING, assemble_shard, is_staged, read_index, shard_path,
                                    stage_sample)

if TYPE_CHECKING:
    from gaia2.tokenizer.config import TokenizerConfig

REPORT_FILE, ENCODE_FILE = "latents.json", "encode.json"
LATENTS_MEMBER = "latents.npy"
VIDEO_SUFFIX = ".mp4"
# A decode worker's own memory, torch and decord loaded: measured ~420 MB, plus the 25% headroom Ray
# Data's memory detector asks for.
DECODE_WORKER_BYTES = 640 << 20
REJECTS_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("split", pa.string()),
                            ("clip_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


class LatentInputError(ValueError):
    """The shard directory, the tokenizer or the output directory cannot be used; says which and why."""


class LatentConfig(StrictModel):
    """How the encode job runs. Only ``mode`` and ``seed`` change the output; the rest is resources."""
    mode: Literal["sample", "mean"] = Field(
        "sample", description="sample: mean + exp(log_std) * eps, as the paper's world model sees latents; "
                              "mean: the posterior mean")
    seed: int = Field(0, ge=0, description="noise seed of the sample mode (with each sample's key)")
    batch_size: int = Field(4, ge=1, description="samples per encoder actor call")
    num_gpus: float = Field(0, ge=0, description="GPUs per encoder actor (0: encode on the CPU)")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per encoder actor; on the CPU also its torch threads")
    concurrency: int = Field(1, ge=1, description="encoder actors")
    decode_cpus: float = Field(0.5, gt=0, description="CPUs per decode task")
    decode_batch_size: int = Field(2, ge=1, description="samples per decode task call")
    io_cpus: float = Field(0.25, gt=0, description="CPUs per read, pack and assemble task")
    read_chunk: int = Field(8, ge=1, description="samples per block coming out of a shard's read task")
    reserve_per_operator: bool = Field(
        False, description="Ray Data's per-operator resource reservation; off on small machines, where it "
                           "keeps the decode tasks from running beside the encoder actor")


def latent_config(**values: Any) -> LatentConfig:
    """``LatentConfig`` from keyword values; raises ``ConfigError`` naming each bad field."""
    try:
        return LatentConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


@dataclass
class LatentInputs:
    """A checked shard directory and tokenizer."""
    shards_dir: str
    tokenizer_dir: str
    tokenizer: "TokenizerConfig"
    tokenizer_sha256: str
    manifest: pa.Table
    manifest_sha256: str
    shards: list[str]        # "train/shard-000000", ... (every tar present, sorted)
    window: int              # frames per sample, a multiple of the tokenizer's temporal factor
    cameras: int             # cameras of the first sample (sizes the decode tasks' memory request)


@dataclass
class LatentResult:
    out_dir: str
    report: dict
    seconds: float


def _sha256_files(paths: list[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_samples(path: str) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A shard tar -> (key, [(member name, bytes), ...]) per sample, members in tar order.

    Members of one sample are contiguous (WebDataset grouping); a key that comes back later is an error.
    """
    seen: set[str] = set()
    current, members = None, []
    with tarfile.open(path) as tar:
        for info in tar:
            if not info.isfile():
                continue
            key = info.name.split(".", 1)[0]
            if key != current:
                if current is not None:
                    yield current, members
                if key in seen:
                    raise ValueError(f"{path}: members of sample {key!r} are not contiguous")
                seen.add(key)
                current, members = key, []
            members.append((info.name, tar.extractfile(info).read()))
    if current is not None:
        yield current, members


def _tokenizer_config(path: str) -> "TokenizerConfig":
    from gaia2.tokenizer.config import TokenizerConfig
    from gaia2.tokenizer.export import WEIGHTS_FILE, read_tokenizer_meta

    if not os.path.isdir(path):
        raise LatentInputError(f"tokenizer {path!r}: not a directory (expected one written by save_tokenizer)")
    try:
        meta = read_tokenizer_meta(path)
        cfg = TokenizerConfig.model_validate(meta.get("config"))
    except ValidationError as err:
        raise LatentInputError(f"tokenizer {path!r}: config.json: {format_validation_error(err, 'config.')}") from None
    except (FileNotFoundError, ValueError) as err:   # these name the path and what is wrong
        raise LatentInputError(str(err)) from None
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        raise LatentInputError(f"tokenizer {path!r}: no {WEIGHTS_FILE}")
    return cfg


def _first_sample(shards_dir: str, shard: str) -> tuple[str, dict]:
    """The key and json of the first sample of ``shard``."""
    for key, members in read_samples(shard_path(shards_dir, shard)):
        for name, data in members:
            if name == f"{key}.json":
                return key, json.loads(data)
        raise LatentInputError(f"shards {shards_dir!r}: sample {key} in {shard} has no {key}.json")
    raise LatentInputError(f"shards {shards_dir!r}: {shard}.tar holds no samples, though the manifest lists some")


def check_inputs(shards_dir: str, tokenizer_dir: str) -> LatentInputs:
    """Check everything that can be checked before any work; raises ``LatentInputError``."""
    shards_dir, tokenizer_dir = os.path.abspath(shards_dir), os.path.abspath(tokenizer_dir)
    manifest_path = os.path.join(shards_dir, "manifest.parquet")
    if not os.path.isdir(shards_dir):
        raise LatentInputError(f"shards {shards_dir!r}: not a directory (expected a shard build: train/, val/, "
                               f"manifest.parquet)")
    if not os.path.isfile(manifest_path):
        raise LatentInputError(f"shards {shards_dir!r}: no manifest.parquet (not a finished shard build)")
    tars = sorted(glob.glob(os.path.join(shards_dir, "*", "shard-*.tar")))
    shards = [os.path.relpath(t, shards_dir)[: -len(".tar")] for t in tars]
    manifest = pq.read_table(manifest_path)
    if manifest.num_rows == 0:
        raise LatentInputError(f"shards {shards_dir!r}: the manifest lists no samples")
    missing = sorted(set(manifest.column("shard").to_pylist()) - set(shards))
    if missing:
        raise LatentInputError(f"shards {shards_dir!r}: the manifest lists shards with no tar: {missing[:5]}")
    tokenizer = _tokenizer_config(tokenizer_dir)
    from gaia2.tokenizer.export import CONFIG_FILE, WEIGHTS_FILE

    key, meta = _first_sample(shards_dir, manifest.column("shard")[0].as_py())
    window = len(meta["timestamps"])
    factor = tokenizer.temporal_factor
    if window < factor or window % factor:
        raise LatentInputError(
            f"window length {window} frames (sample {key}) is not a multiple of the tokenizer's temporal factor "
            f"{factor}: the encoder maps each {factor} frames to one latent; cut the shards with window.frames "
            f"a multiple of {factor}")
    return LatentInputs(
        shards_dir=shards_dir, tokenizer_dir=tokenizer_dir, tokenizer=tokenizer,
        tokenizer_sha256=_sha256_files([os.path.join(tokenizer_dir, f) for f in (CONFIG_FILE, WEIGHTS_FILE)]),
        manifest=manifest, manifest_sha256=_sha256_files([manifest_path]), shards=shards, window=window,
        cameras=len(meta["cameras"]))


def _fingerprint(inputs: LatentInputs, cfg: LatentConfig) -> dict:
    return {"manifest_sha256": inputs.manifest_sha256, "tokenizer_sha256": inputs.tokenizer_sha256,
            "mode": cfg.mode, "seed": cfg.seed}


def check_output(out_dir: str, inputs: LatentInputs, cfg: LatentConfig) -> bool:
    """True if ``out_dir`` holds (part of) this very encoding, to resume; raises if it holds another one."""
    path = os.path.join(out_dir, ENCODE_FILE)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        previous = json.load(f)
    ours = _fingerprint(inputs, cfg)
    differ = sorted(k for k in ours if previous.get(k) != ours[k])
    if differ:
        raise LatentInputError(f"{out_dir} holds latents of other inputs or settings ({', '.join(differ)} "
                               f"differ); choose a new output directory or delete it")
    return True


def sample_seed(seed: int, key: str) -> int:
    """The sample mode's noise seed for one sample: a hash of (seed, key), in [0, 2**63)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---- Ray Data stages -------------------------------------------------------------------------------

def read_shard_batch(batch: dict[str, np.ndarray], shards_dir: str, out_dir: str,
                     chunk: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task: input shards (``shard``, ``keys_json``: the manifest's keys of it) -> one row per
    sample not yet staged: ``members`` (its tar member bytes), in blocks of ``chunk`` samples.

    A manifest key missing from the tar becomes a failed row; a tar key missing from the manifest, or
    samples out of key order (the output is assembled in key order), is an inconsistent build and raises.
    """
    def rows(items: list[tuple[str, str, bytes, str]]) -> dict[str, np.ndarray]:
        shard_, key_, members_, error_ = zip(*items)
        return {"shard": np.asarray(shard_, dtype=object), "key": np.asarray(key_, dtype=object),
                "members": np.asarray(members_, dtype=object), "error": np.asarray(error_, dtype=object)}

    for shard, keys_json in zip(batch["shard"], batch["keys_json"]):
        shard, expected = str(shard), set(json.loads(str(keys_json)))
        pending: list[tuple[str, str, bytes, str]] = []
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
                pending.append((shard, key, tar_members(members), ""))
            if len(pending) >= chunk:
                yield rows(pending)
                pending = []
        for key in sorted(expected - set(found)):
            if not is_staged(out_dir, shard, key):
                err = ClipError(Reason.INVALID_RECORD, f"sample {key} is in manifest.parquet but not in {shard}.tar")
                pending.append((shard, key, b"", str(err)))
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


def decode_batch(batch: dict[str, np.ndarray], height: int, width: int, window: int) -> dict[str, np.ndarray]:
    """Ray Data task: ``members`` -> ``frames`` (N, T, H, W, 3) uint8, ``head``, ``tail``; a sample that
    fails gets its reason in ``error`` (and empty frames) and goes on to the rejects."""
    errors = [str(e) for e in batch["error"]]
    frames, heads, tails = [], [], []
    for i, (key, fragment) in enumerate(zip(batch["key"], batch["members"])):
        clip, head, tail = np.zeros((0, window, height, width, 3), np.uint8), b"", b""
        if not errors[i]:
            try:
                clip, head, tail = decode_sample(str(key), bytes(fragment), height, width, window)
            except ClipError as err:
                errors[i] = str(err)
            except Exception as err:   # any other per-sample failure is a reject row, not a crash
                errors[i] = str(ClipError(Reason.DECODE_FAILED, f"sample {key}: {type(err).__name__}: {err}"))
        frames.append(clip)
        heads.append(head)
        tails.append(tail)
    return {"shard": batch["shard"], "key": batch["key"], "frames": object_column(frames),
            "head": np.asarray(heads, dtype=object), "tail": np.asarray(tails, dtype=object),
            "error": np.asarray(errors, dtype=object)}


class EncodeLatents:
    """Callable Ray Data stage: ``frames`` (N, T, H, W, 3) uint8 -> ``latents`` (T/f, N, L, H/s, W/s) float32.

    Used as an actor pool, the tokenizer loaded once per actor:
        ds.map_batches(EncodeLatents, fn_constructor_kwargs={"path": ..., "mode": "sample", "seed": 0,
                       "device": "cuda"}, batch_size=4, compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)
    Encoder failures are not per-sample problems (out of memory, a bad device): they raise.
    """

    def __init__(self, path: str, mode: str = "sample", seed: int = 0, device: str = "cpu",
                 num_threads: int | None = None):
        import torch

        from gaia2.tokenizer.export import load_tokenizer

        if mode not in ("sample", "mean"):
            raise ValueError(f"EncodeLatents: mode must be 'sample' or 'mean', got {mode!r}")
        if num_threads and device == "cpu":
            torch.set_num_threads(num_threads)
        self.model = load_tokenizer(path, device)
        self.device, self.mode, self.seed = torch.device(device), mode, seed

    def encode_sample(self, key: str, frames: np.ndarray) -> np.ndarray:
        """frames (N, T, H, W, 3) uint8 -> latents (T/f, N, L, H/s, W/s) float32; one encoder call."""
        import torch
        from einops import rearrange

        from gaia2.tokenizer.clips import to_model_input
        from gaia2.tokenizer.model import Tokenizer

        with torch.no_grad():
            # uint8 crosses to the device (4x less than float), converted there.
            video = to_model_input(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))  # (N, 3, T, H, W)
            mean, log_std = self.model.encode(video)                       # each (N, L, T/f, H/s, W/s)
            mean, log_std = mean.float().cpu(), log_std.float().cpu()
            if self.mode == "sample":
                # Noise drawn on the CPU from a per-sample generator: the same on any device and batching.
                gen = torch.Generator().manual_seed(sample_seed(self.seed, key))
                latents = Tokenizer.sample_latents(mean, log_std, gen)
            else:
                latents = mean
        return np.ascontiguousarray(rearrange(latents, "n l t h w -> t n l h w").numpy(), dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        latents = []
        for key, frames, error in zip(batch["key"], batch["frames"], batch["error"]):
            latents.append(np.zeros((0,) * 5, np.float32) if error else self.encode_sample(str(key), frames))
        return {"shard": batch["shard"], "key": batch["key"], "latents": object_column(latents),
                "head": batch["head"], "tail": batch["tail"], "error": batch["error"]}


def stage_latents_batch(batch: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """Ray Data task: stage each sample (head + ``<key>.latents.npy`` + tail) or its failure; passes on
    only the keys, so nothing heavy reaches the driver."""
    for shard, key, head, latents, tail, error in zip(batch["shard"], batch["key"], batch["head"],
                                                       batch["latents"], batch["tail"], batch["error"]):
        key, error = str(key), str(error)
        sample = b""
        if not error:
            member = tar_members([(f"{key}.{LATENTS_MEMBER}", npy_bytes(np.asarray(latents, dtype=np.float32)))])
            sample = bytes(head) + member + bytes(tail)
        stage_sample(out_dir, str(shard), key, sample, error)
    return {"key": np.asarray(batch["key"], dtype=object), "error": np.asarray(batch["error"], dtype=object)}


def latent_shapes(path: str) -> dict[str, int]:
    """Ray task: shapes of a latent shard's ``latents.npy`` members, read back from their npy headers
    ({"3x5x16x4x8": count}); raises if one is not float32."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shapes: Counter = Counter()
    with tarfile.open(path) as tar:
        for info in tar:
            if info.name.endswith(f".{LATENTS_MEMBER}"):
                f = tar.extractfile(info)
                shape, _, dtype = readers[np.lib.format.read_magic(f)](f)
                if dtype != np.float32:
                    raise RuntimeError(f"{path}: {info.name} is {dtype}, expected float32")
                shapes["x".join(map(str, shape))] += 1
    return dict(shapes)


# ---- the job ---------------------------------------------------------------------------------------

def _prepare_output(out_dir: str, inputs: LatentInputs, cfg: LatentConfig) -> bool:
    resuming = check_output(out_dir, inputs, cfg)
    os.makedirs(out_dir, exist_ok=True)
    if not resuming:
        with open(os.path.join(out_dir, ENCODE_FILE), "w") as f:
            json.dump({**_fingerprint(inputs, cfg), "shards_dir": inputs.shards_dir,
                       "tokenizer": inputs.tokenizer_dir}, f, indent=1, sort_keys=True)
    for root, _, files in os.walk(out_dir):   # leftovers of an interrupted write are never complete files
        for name in files:
            if name.endswith(".partial"):
                os.remove(os.path.join(root, name))
    return resuming


def _run_samples(shards: list[str], keys: dict[str, list[str]], inputs: LatentInputs, cfg: LatentConfig,
                 out_dir: str) -> int:
    """Read, decode, encode and stage every sample of ``shards``; returns how many were staged."""
    import ray

    tok = inputs.tokenizer
    items = [{"shard": s, "keys_json": json.dumps(keys.get(s, []))} for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=len(items))   # one read task per shard
    io_task = {"num_cpus": cfg.io_cpus}
    ds = ds.map_batches(read_shard_batch, fn_kwargs={"shards_dir": inputs.shards_dir, "out_dir": out_dir,
                                                     "chunk": cfg.read_chunk}, batch_size=1, **io_task)
    # Decode tasks ask for the memory they take: the worker (torch and decord loaded) plus its uint8
    # clips, twice (per camera and stacked); paper: 6 x 24 x 448 x 960 x 3 = 186 MB a sample. So a node
    # runs no more of them than it can hold; and with resources unequal to the encoder's, Ray Data does
    # not fuse decoding into the encoder actors (it fuses map stages of equal resources).
    frame_bytes = inputs.cameras * inputs.window * tok.height * tok.width * 3
    ds = ds.map_batches(decode_batch, fn_kwargs={"height": tok.height, "width": tok.width, "window": inputs.window},
                        batch_size=cfg.decode_batch_size, num_cpus=cfg.decode_cpus,
                        memory=DECODE_WORKER_BYTES + 2 * cfg.decode_batch_size * frame_bytes)
    ds = ds.map_batches(
        EncodeLatents, fn_constructor_kwargs={
            "path": inputs.tokenizer_dir, "mode": cfg.mode, "seed": cfg.seed,
            "device": "cuda" if cfg.num_gpus > 0 else "cpu", "num_threads": max(1, int(cfg.num_cpus))},
        batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
    ds = ds.map_batches(stage_latents_batch, fn_kwargs={"out_dir": out_dir}, batch_size=cfg.batch_size, **io_task)
    ctx = ray.data.DataContext.get_current()
    reservation = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = cfg.reserve_per_operator
    try:
        staged = ds.take_all()
    finally:
        ctx.op_resource_reservation_enabled = reservation
    if os.environ.get("GAIA2_DATA_STATS"):   # Ray Data's per-operator timings, for tuning
        print(ds.stats())
    return len(staged)


def _write_parquet(path: str, table: pa.Table) -> None:
    tmp = f"{path}.partial"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def encode_latents(shards_dir: str, tokenizer_dir: str, out_dir: str, cfg: LatentConfig | None = None,
                   log: Callable[[str], None] = print) -> LatentResult:
    """Encode every sample of a shard build into latent shards under ``out_dir``.

    Checks the inputs first (``LatentInputError``, before anything is written); re-running onto the
    same ``out_dir`` with the same inputs and settings keeps complete shards and staged samples.
    """
    import ray

    started = time.perf_counter()
    cfg = cfg or LatentConfig()
    inputs = check_inputs(shards_dir, tokenizer_dir)
    out_dir = os.path.abspath(out_dir)
    resuming = _prepare_output(out_dir, inputs, cfg)
    rows = inputs.manifest.select(list(SAMPLE_FIELDS) + ["shard"]).to_pylist()
    by_shard: dict[str, list[dict]] = {s: [] for s in inputs.shards}
    for r in rows:
        by_shard[r["shard"]].append({f: r[f] for f in SAMPLE_FIELDS})
    done = {s for s in inputs.shards if read_index(out_dir, s) is not None}
    todo = [s for s in inputs.shards if s not in done]
    log(f"[latents] {len(rows)} samples in {len(inputs.shards)} shards of {inputs.shards_dir} -> {out_dir}"
        + (f" (resuming: {len(done)} shards complete)" if resuming else "")
        + f"; tokenizer {inputs.tokenizer.preset} ({inputs.tokenizer_dir}), mode {cfg.mode}, seed {cfg.seed}")

    staged = 0
    if todo:
        staged = _run_samples(todo, {s: [r["key"] for r in by_shard[s]] for s in todo}, inputs, cfg, out_dir)
        assemble = ray.remote(num_cpus=cfg.io_cpus)(assemble_shard)
        ray.get([assemble.remote(out_dir, s, by_shard[s]) for s in todo])
    shutil.rmtree(os.path.join(out_dir, STAGING), ignore_errors=True)   # every shard is assembled

    written, failed = set(), []
    for shard in inputs.shards:
        index = read_index(out_dir, shard)
        if index is None:
            raise RuntimeError(f"shard {shard} is missing after encoding")
        written.update(s["key"] for s in index["samples"])
        failed.extend({**f, "shard": shard} for f in index["failed"])
    rejects = [{"key": f["key"], "shard": f["shard"], "split": f["split"], "clip_id": f["clip_id"],
                "reason": f["error"].split(":", 1)[0], "detail": f["error"].split(":", 1)[-1].strip()}
               for f in failed]
    manifest = inputs.manifest.filter(pa.array([k in written for k in inputs.manifest.column("key").to_pylist()]))
    shapes_task = ray.remote(num_cpus=cfg.io_cpus)(latent_shapes)
    shapes: Counter = Counter()
    for part in ray.get([shapes_task.remote(shard_path(out_dir, s)) for s in inputs.shards]):
        shapes.update(part)

    seconds = round(time.perf_counter() - started, 3)
    report = make_report(inputs, cfg, rows, rejects, len(written), dict(sorted(shapes.items())),
                         len(done), staged, seconds)
    _write_parquet(os.path.join(out_dir, "manifest.parquet"), manifest)
    _write_parquet(os.path.join(out_dir, "rejects.parquet"), pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA))
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    log(f"[latents] done in {seconds:.1f} s: {len(written)} samples written, {len(rejects)} rejected, "
        f"{len(done)} shards already complete")
    return LatentResult(out_dir, report, seconds)


def make_report(inputs: LatentInputs, cfg: LatentConfig, rows: list[dict], rejects: list[dict], n_written: int,
                shapes: dict[str, int], n_skipped: int, n_processed: int, seconds: float) -> dict:
    """Counts per split that must reconcile (samples in = written + rejected), and what made the latents."""
    tok = inputs.tokenizer
    n_in, n_rejected = Counter(r["split"] for r in rows), Counter(r["split"] for r in rejects)
    splits = {s: {"samples_in": n_in[s], "written": n_in[s] - n_rejected[s], "rejected": n_rejected[s]}
              for s in sorted(set(n_in) | {"train", "val"})}
    if n_written != sum(v["written"] for v in splits.values()) or sum(shapes.values()) != n_written:
        raise RuntimeError(f"latent encoding accounting does not reconcile: {splits}, {n_written} written, "
                           f"{sum(shapes.values())} latents in the shards")
    return {
        "shards_dir": inputs.shards_dir,
        "tokenizer": {"path": inputs.tokenizer_dir, "sha256": inputs.tokenizer_sha256,
                      "config": tok.model_dump(mode="json")},
        "mode": cfg.mode, "seed": cfg.seed,
        "window_frames": inputs.window,
        "latent_layout": "(T_latent, N_cameras, L, H', W') float32",
        "latent_shape": [inputs.window // tok.temporal_factor, "N_cameras", tok.latent_dim,
                         tok.height // tok.spatial_factor, tok.width // tok.spatial_factor],
        "latent_shapes": shapes,
        "splits": splits,
        "counts": {"samples_in": len(rows), "written": n_written, "rejected": len(rejects),
                   "processed_this_run": n_processed},
        "reasons": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "shards": {"count": len(inputs.shards), "skipped_complete": n_skipped},
        "seconds": seconds,
        "samples_per_s": round(n_processed / max(seconds, 1e-9), 3),
    }
