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
    rejects.parquet              one row per sample that failed: key, shard, split, clip_id, window, and the
                                 stage, reason and detail (pipelines/rejects.py)
    latents.json                 report: tokenizer path/config, mode, seed, latent shapes, counts, seconds
    encode.json                  what the latents were made from; a rerun onto another is refused

The same inputs, tokenizer, mode, seed and device give byte-identical shards (``latents_stages`` says why).
Modules: ``latents_config`` (settings, errors, the checks made before any work), ``latents_stages``
(the Ray Data stages), this one (the pipeline and its report). The names the jobs and tests use are
importable from here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.rejects import rejects_table
from pipelines.shards.write import SAMPLE_FIELDS, STAGING, assemble_shard, read_index, shard_path
from pipelines.tokenizer.latents_config import (ENCODE_FILE, REPORT_FILE, LatentConfig, LatentInputError,
                                                LatentInputs, check_inputs, check_output, fingerprint,
                                                latent_config, read_samples)
from pipelines.tokenizer.latents_stages import (LATENTS_MEMBER, EncodeLatents, decode_batch, decode_sample,
                                                latent_shapes, read_shard_batch, sample_seed, split_sample,
                                                stage_latents_batch)

__all__ = ["ENCODE_FILE", "LATENTS_MEMBER", "REPORT_FILE", "EncodeLatents", "LatentConfig", "LatentInputError",
           "LatentInputs", "LatentResult", "check_inputs", "check_output", "decode_batch", "decode_sample",
           "encode_latents", "latent_config", "latent_shapes", "make_report", "read_samples", "read_shard_batch",
           "sample_seed", "split_sample", "stage_latents_batch"]

# A decode worker's own memory, torch and decord loaded: measured ~420 MB, plus the 25% headroom Ray
# Data's memory detector asks for.
DECODE_WORKER_BYTES = 640 << 20



@dataclass
class LatentResult:
    out_dir: str
    report: dict
    seconds: float




def _prepare_output(out_dir: str, inputs: LatentInputs, cfg: LatentConfig) -> bool:
    resuming = check_output(out_dir, inputs, cfg)
    os.makedirs(out_dir, exist_ok=True)
    if not resuming:
        with open(os.path.join(out_dir, ENCODE_FILE), "w") as f:
            json.dump({**fingerprint(inputs, cfg), "shards_dir": inputs.shards_dir,
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

    written, rejects = set(), []
    for shard in inputs.shards:
        index = read_index(out_dir, shard)
        if index is None:
            raise RuntimeError(f"shard {shard} is missing after encoding")
        written.update(s["key"] for s in index["samples"])
        rejects.extend(index["failed"])   # already rejects-table rows
    manifest = inputs.manifest.filter(pa.array([k in written for k in inputs.manifest.column("key").to_pylist()]))
    shapes_task = ray.remote(num_cpus=cfg.io_cpus)(latent_shapes)
    shapes: Counter = Counter()
    for part in ray.get([shapes_task.remote(shard_path(out_dir, s)) for s in inputs.shards]):
        shapes.update(part)

    seconds = round(time.perf_counter() - started, 3)
    report = make_report(inputs, cfg, rows, rejects, len(written), dict(sorted(shapes.items())),
                         len(done), staged, seconds)
    _write_parquet(os.path.join(out_dir, "manifest.parquet"), manifest)
    _write_parquet(os.path.join(out_dir, "rejects.parquet"), rejects_table(rejects))
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
