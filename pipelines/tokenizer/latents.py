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
    latents.json                 report: tokenizer path/config, mode, seed, latent shapes, latent statistics,
                                 counts, seconds
    latent_stats.json            the per-channel mean and std of the train split's latents
                                 (``gaia2.flow.stats.LatentStats``; all splits when there is no train split),
                                 which the world model normalises with; ``gaia2 latents stats`` remeasures it
    encode.json                  what the latents were made from; a rerun onto another is refused

The same inputs, tokenizer, mode, seed and device give byte-identical shards (``latents_stages`` says why).
Modules: ``latents_config`` (settings, errors, the checks made before any work), ``latents_stages``
(the Ray Data stages and the shard scan), this one (the pipeline, its report and the latent statistics).
The names the jobs and tests use are importable from here.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from gaia2 import storage
from pipelines.rejects import rejects_table
from pipelines.shards.write import SAMPLE_FIELDS, STAGING, assemble_shard, read_index, shard_path
from pipelines.tokenizer.latents_config import (ENCODE_FILE, REPORT_FILE, LatentConfig, LatentInputError,
                                                LatentInputs, check_inputs, check_output, fingerprint,
                                                latent_config, read_samples)
from pipelines.tokenizer.latents_stages import (LATENTS_MEMBER, EncodeLatents, decode_batch, decode_sample,
                                                read_shard_batch, sample_seed, scan_latent_shard, split_sample,
                                                stage_latents_batch)

if TYPE_CHECKING:
    from gaia2.flow.stats import ChannelMoments, LatentStats

__all__ = ["ENCODE_FILE", "LATENTS_MEMBER", "REPORT_FILE", "EncodeLatents", "LatentConfig", "LatentInputError",
           "LatentInputs", "LatentResult", "check_inputs", "check_output", "decode_batch", "decode_sample",
           "encode_latents", "latent_config", "latent_shards", "make_report", "measure_latent_dir", "merge_moments",
           "read_samples", "read_shard_batch", "sample_seed", "scan_latent_shard", "scan_latent_shards",
           "split_sample", "stage_latents_batch"]

# A decode worker's own memory, torch and decord loaded: measured ~420 MB, plus the 25% headroom Ray
# Data's memory detector asks for.
DECODE_WORKER_BYTES = 640 << 20
SPLITS = ("train", "val", "all")   # what latent statistics can be measured over


@dataclass
class LatentResult:
    out_dir: str
    report: dict
    seconds: float
    stats: "LatentStats | None" = None     # as written to latent_stats.json and the report
    stats_version: str | None = None       # models:/NAME/VERSION the job recorded them on (jobs.registry)


def _prepare_output(out_dir: str, inputs: LatentInputs, cfg: LatentConfig) -> bool:
    resuming = check_output(out_dir, inputs, cfg)
    storage.makedirs(out_dir)
    if not resuming:
        storage.write_text(storage.join(out_dir, ENCODE_FILE), json.dumps(
            {**fingerprint(inputs, cfg), "shards_dir": storage.redact(inputs.shards_dir),
             "tokenizer": inputs.tokenizer_dir}, indent=1, sort_keys=True))
    storage.clean_partials(out_dir)   # leftovers of an interrupted write are never complete files
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
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_atomic(path, sink.getvalue().to_pybytes())


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
    out_dir = storage.absolute(out_dir)
    resuming = _prepare_output(out_dir, inputs, cfg)
    rows = inputs.manifest.select(list(SAMPLE_FIELDS) + ["shard"]).to_pylist()
    by_shard: dict[str, list[dict]] = {s: [] for s in inputs.shards}
    for r in rows:
        by_shard[r["shard"]].append({f: r[f] for f in SAMPLE_FIELDS})
    done = {s for s in inputs.shards if read_index(out_dir, s) is not None}
    todo = [s for s in inputs.shards if s not in done]
    log(f"[latents] {len(rows)} samples in {len(inputs.shards)} shards of {storage.redact(inputs.shards_dir)} -> "
        f"{storage.redact(out_dir)}"
        + (f" (resuming: {len(done)} shards complete)" if resuming else "")
        + f"; tokenizer {inputs.tokenizer.preset} ({inputs.tokenizer_dir}), mode {cfg.mode}, seed {cfg.seed}")

    staged = 0
    if todo:
        staged = _run_samples(todo, {s: [r["key"] for r in by_shard[s]] for s in todo}, inputs, cfg, out_dir)
        assemble = ray.remote(num_cpus=cfg.io_cpus)(assemble_shard)
        ray.get([assemble.remote(out_dir, s, by_shard[s]) for s in todo])
    storage.rmtree(storage.join(out_dir, STAGING))   # every shard is assembled

    written, rejects = set(), []
    for shard in inputs.shards:
        index = read_index(out_dir, shard)
        if index is None:
            raise RuntimeError(f"shard {shard} is missing after encoding")
        written.update(s["key"] for s in index["samples"])
        rejects.extend(index["failed"])   # already rejects-table rows
    manifest = inputs.manifest.filter(pa.array([k in written for k in inputs.manifest.column("key").to_pylist()]))
    # Every shard, the skipped complete ones too: the shapes and statistics describe the whole output.
    shapes, moments = scan_latent_shards(out_dir, inputs.shards, cfg.io_cpus)
    # Every sample rejected: no statistics, but the report and the rejects still say why.
    stats = merge_moments(out_dir, moments, "train") if any(m.count for m in moments.values()) else None

    seconds = round(time.perf_counter() - started, 3)
    report = make_report(inputs, cfg, rows, rejects, len(written), shapes, len(done), staged, seconds)
    report["latent_stats"] = stats and stats.model_dump()
    if stats is not None:
        stats.write(out_dir)
    _write_parquet(storage.join(out_dir, "manifest.parquet"), manifest)
    _write_parquet(storage.join(out_dir, "rejects.parquet"), rejects_table(rejects))
    storage.write_text(storage.join(out_dir, REPORT_FILE), json.dumps(report, indent=1, sort_keys=True))
    log(f"[latents] done in {seconds:.1f} s: {len(written)} samples written, {len(rejects)} rejected, "
        f"{len(done)} shards already complete; latent statistics: {stats.summary() if stats else 'none'}")
    return LatentResult(out_dir, report, seconds, stats)


def latent_shards(directory: str) -> list[str]:
    """The shards of a latent shard directory ("train/shard-000000", ...; sorted); raises ``LatentStatsError``
    if it is not a directory or holds none."""
    from gaia2.flow.stats import LatentStatsError

    try:
        shards = sorted(rel[: -len(".tar")] for rel in storage.list_files(directory)
                        if rel.count("/") == 1 and rel.split("/")[1].startswith("shard-") and rel.endswith(".tar"))
        is_dir = bool(shards) or storage.is_dir(directory)
    except OSError as err:
        raise LatentStatsError(f"latents {storage.redact(directory)!r}: cannot be read ({err})") from None
    if not is_dir:
        raise LatentStatsError(f"latents {storage.redact(directory)!r}: not a directory (expected latent shards "
                               f"written by gaia2 encode-latents: train/shard-*.tar, val/shard-*.tar)")
    if not shards:
        raise LatentStatsError(f"latents {storage.redact(directory)!r}: no shards (expected <split>/shard-*.tar, "
                               f"written by gaia2 encode-latents)")
    return shards


def scan_latent_shards(directory: str, shards: list[str], num_cpus: float = 0.25
                       ) -> tuple[dict[str, int], dict[str, "ChannelMoments"]]:
    """Read every latents.npy of ``shards`` once, one Ray task per shard (``scan_latent_shard``) ->
    (latent shapes over all shards {"3x5x16x4x8": count}, each shard's ``ChannelMoments``).

    Raises ``LatentStatsError`` naming the shards that could not be measured (the first three, one line).
    """
    import ray

    from gaia2.flow.stats import ChannelMoments, LatentStatsError

    scan = ray.remote(num_cpus=num_cpus)(scan_latent_shard)
    parts = ray.get([scan.remote(shard_path(directory, s)) for s in shards])
    errors = [p["error"] for p in parts if p["error"]]
    if errors:
        more = f" (and {len(errors) - 3} more shards)" if len(errors) > 3 else ""
        raise LatentStatsError("; ".join(errors[:3]) + more)
    shapes: Counter = Counter()
    for part in parts:
        shapes.update(part["shapes"])
    return dict(sorted(shapes.items())), {s: ChannelMoments.from_dict(p["moments"]) for s, p in zip(shards, parts)}


def merge_moments(directory: str, moments: dict[str, "ChannelMoments"], split: str = "train") -> "LatentStats":
    """The per-shard moments of ``split`` ("train", "val" or "all") -> ``LatentStats`` whose source names the
    split and ``directory``. "train" falls back to all splits when the train shards hold no latents (a build
    without a train split), and says so in the source."""
    from gaia2.flow.stats import ChannelMoments, LatentStatsError

    if split not in SPLITS:
        raise LatentStatsError(f"split {split!r}: expected one of {', '.join(SPLITS)}")

    def merged(chosen: str) -> ChannelMoments:
        total = ChannelMoments()
        for shard, part in moments.items():
            if chosen == "all" or shard.split("/", 1)[0] == chosen:
                try:
                    total.merge(part)
                except LatentStatsError as err:
                    raise LatentStatsError(f"{shard_path(directory, shard)}: {err}") from None
        return total

    where = storage.redact(directory)
    total, source = merged(split), f"{split} split of latent shards {where}"
    if split == "all":
        source = f"all splits of latent shards {where}"
    elif split == "train" and total.count == 0:
        total, source = merged("all"), f"all splits of latent shards {where} (no train latents)"
    return total.stats(source)


def measure_latent_dir(directory: str, split: str = "train", num_cpus: float = 0.25) -> "LatentStats":
    """Measure the latent statistics of an existing latent shard directory (``split``: train, val or all) the
    way ``encode_latents`` does, and write them to ``directory/latent_stats.json`` for the train split (what the
    world model trains with), ``latent_stats.<split>.json`` for the others (``gaia2.flow.stats.stats_file``);
    raises ``LatentStatsError`` naming the problem (not a latent shard directory, no shards, a sample without
    latents, NaN latents)."""
    from gaia2.flow.stats import stats_file

    directory = storage.absolute(directory)
    shards = latent_shards(directory)
    _, moments = scan_latent_shards(directory, shards, num_cpus)
    stats = merge_moments(directory, moments, split)
    stats.write(directory, stats_file(split))
    return stats


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
