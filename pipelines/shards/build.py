"""The shard build: clips -> balanced, geofenced WebDataset shards + manifest, rejects and report.

    ingest (tasks)  ->  plan (driver: split, stride, balance, shard names)
    -> decode -> detect -> encode videos (one task; for a detector network: task -> actor pool -> task)
    -> CLIP embed (actor pool) -> pack + stage each sample (tasks) -> assemble each shard (tasks)

Output directory:
    train/shard-000000.tar ...   val/shard-000000.tar ...   WebDataset shards
    index/<split>-shard-*.json   per-shard sidecar: samples, failures, bytes, sha256 (resume)
    _staging/                    samples of shards not yet assembled (only while a build runs)
    manifest.parquet             one row per written sample
    rejects.parquet              one row per rejected clip, failed window or window not selected: the stage,
                                 reason and detail (pipelines/rejects.py)
    report.json, plots/*.png     counts, cell distributions and entropies, split counts, reasons
    config.yaml, geofences.geojson, build.json (fingerprint of config + inputs; resume guard)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import yaml

from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.geofence import Geofences
from gaia2.curation.report import write_report_plots
from gaia2.schema.errors import Reason
from pipelines.rejects import Reject, reject_row, rejects_table
from pipelines.shards.decode import decode_batch
from pipelines.shards.detect import DetectAgents
from pipelines.shards.embed import EmbedClip
from pipelines.shards.encode import encode_batch, pack_batch
from pipelines.shards.ingest import ingest_batch
from pipelines.shards.plan import Plan, make_plan
from pipelines.shards.sources import ClipRef, list_clips
from pipelines.shards.window import window_batch
from pipelines.shards.write import (SAMPLE_FIELDS, STAGING, assemble_shard, index_path, is_staged, read_index,
                                    shard_path, stage_batch)

BUILD_FILE = "build.json"


class OutputConflict(RuntimeError):
    """The output directory holds a build of different inputs or configuration."""


@dataclass
class BuildResult:
    out_dir: str
    report: dict
    fingerprint: str
    seconds: float


def fingerprint(cfg: ShardBuildConfig, refs: list[ClipRef]) -> str:
    """Hash of the resolved config and every clip record: same fingerprint, same shards."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for ref in refs:
        h.update(ref.ref_id.encode())
        if ref.record is not None:
            h.update(ref.record.encode())
        elif os.path.exists(ref.location):
            with open(ref.location, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _prepare_output(out_dir: str, cfg: ShardBuildConfig, fp: str, geofences: Geofences) -> bool:
    """Create or reopen ``out_dir``; returns True when resuming an earlier build of the same inputs."""
    os.makedirs(out_dir, exist_ok=True)
    build_file = os.path.join(out_dir, BUILD_FILE)
    resuming = False
    if os.path.exists(build_file):
        with open(build_file) as f:
            previous = json.load(f)
        if previous.get("fingerprint") != fp:
            raise OutputConflict(
                f"{out_dir} holds a build of different inputs or configuration (fingerprint "
                f"{previous.get('fingerprint', '?')[:12]} != {fp[:12]}); choose a new --out or delete it")
        resuming = True
    else:
        with open(build_file, "w") as f:
            json.dump({"fingerprint": fp, "complete": False}, f)
    # Leftovers of an interrupted write are never complete shards.
    for root, _, files in os.walk(out_dir):
        for name in files:
            if name.endswith(".partial"):
                os.remove(os.path.join(root, name))
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg.model_dump(), f, sort_keys=True)
    with open(os.path.join(out_dir, "geofences.geojson"), "w") as f:
        json.dump(geofences.to_geojson(), f, indent=1, sort_keys=True)
    return resuming


def run_ingest(refs: list[ClipRef], cfg: ShardBuildConfig) -> list[dict]:
    items = [{**asdict(ref), "record": ref.record or ""} for ref in refs]
    ds = ray.data.from_items(items).map_batches(
        ingest_batch, fn_kwargs={"config_json": cfg.model_dump_json()}, batch_size=cfg.ingest.batch_size,
        num_cpus=cfg.resources.ingest_cpus)
    return ds.take_all()


def run_samples(todo: list[dict], cfg: ShardBuildConfig, out_dir: str) -> None:
    """Decode, annotate, encode and stage every window in ``todo``."""
    if not todo:
        return
    # Per-operator reservation starves the heavy window stage on small machines (ResourcesConfig).
    ctx = ray.data.DataContext.get_current()
    reservation = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = cfg.resources.reserve_per_operator
    try:
        _run_samples(todo, cfg, out_dir)
    finally:
        ctx.op_resource_reservation_enabled = reservation


def _run_samples(todo: list[dict], cfg: ShardBuildConfig, out_dir: str) -> None:
    config_json = cfg.model_dump_json()
    det, emb, res = cfg.detection, cfg.embedding, cfg.resources
    cols = ("key", "clip_id", "drive_id", "window", "start_time", "split", "cell", "weight", "shard",
            "clip_json", "track_json")
    ds = ray.data.from_items([{c: r[c] for c in cols} for r in todo])
    task = {"batch_size": res.window_batch_size, "num_cpus": res.window_cpus}
    detect_args = {"kind": det.kind, "checkpoint": det.checkpoint, "max_agents": det.max_agents,
                   "score_threshold": det.score_threshold}
    if det.kind == "ground_truth":   # no model: decode, annotate and encode in one function
        ds = ds.map_batches(window_batch, fn_kwargs={"config_json": config_json, "detect_args": detect_args}, **task)
    else:                            # the detector network is an actor pool (loaded once, GPUs if asked)
        ds = ds.map_batches(decode_batch, fn_kwargs={"config_json": config_json}, **task)
        ds = ds.map_batches(DetectAgents, fn_constructor_kwargs=detect_args, batch_size=det.batch_size,
                            compute=ray.data.ActorPoolStrategy(size=det.concurrency),
                            num_cpus=det.num_cpus, num_gpus=det.num_gpus)
        ds = ds.map_batches(encode_batch, fn_kwargs={"config_json": config_json}, **task)
    ds = ds.map_batches(
        EmbedClip, fn_constructor_kwargs={"path": emb.clip_path}, batch_size=emb.batch_size,
        compute=ray.data.ActorPoolStrategy(size=emb.concurrency), num_cpus=emb.num_cpus, num_gpus=emb.num_gpus)
    pack = {"batch_size": emb.batch_size, "num_cpus": res.pack_cpus}
    ds = ds.map_batches(pack_batch, fn_kwargs={"config_json": config_json}, **pack)
    ds = ds.map_batches(stage_batch, fn_kwargs={"out_dir": out_dir}, **pack)
    staged = ds.take_all()
    if os.environ.get("GAIA2_DATA_STATS"):   # Ray Data's per-operator timings, for tuning
        print(ds.stats())
    if len(staged) != len(todo):
        raise RuntimeError(f"{len(todo)} windows to stage, {len(staged)} staged")


def assemble(shards: list[str], plan: Plan, cfg: ShardBuildConfig, out_dir: str) -> None:
    """Assemble each shard from its staged samples, one Ray task per shard."""
    rows: dict[str, list[dict]] = {s: [] for s in shards}
    for r in plan.selected:
        if r["shard"] in rows:
            rows[r["shard"]].append({f: r[f] for f in SAMPLE_FIELDS})
    task = ray.remote(num_cpus=cfg.resources.pack_cpus)(assemble_shard)
    ray.get([task.remote(out_dir, s, rows[s]) for s in shards])


def _write_parquet(path: str, table: pa.Table) -> None:
    tmp = f"{path}.partial"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("split", pa.string()), ("cell", pa.string()),
    ("weight", pa.float64()), ("clip_id", pa.string()), ("drive_id", pa.string()), ("window", pa.int64()),
    ("start_time", pa.float64())])


def build_shards(source: str, out_dir: str, cfg: ShardBuildConfig,
                 log: Callable[[str], None] = print) -> BuildResult:
    """Run the whole build; resumes onto an existing ``out_dir`` of the same inputs and config."""
    started = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    refs = list_clips(source)
    geofences = Geofences.from_geojson(cfg.split.geofences) if cfg.split.geofences else Geofences.default()
    fp = fingerprint(cfg, refs)
    resuming = _prepare_output(out_dir, cfg, fp, geofences)
    log(f"[shards] {len(refs)} clips from {source} -> {out_dir}" + (" (resuming)" if resuming else ""))

    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    rows = run_ingest(refs, cfg)
    lap("ingest_s")
    windows = [r for r in rows if r["kind"] == "window"]
    clip_rejects = [r for r in rows if r["kind"] == "reject"]
    plan = make_plan(windows, cfg, geofences)
    lap("select_s")
    shards = plan.shards()
    done = {s for s in shards if read_index(out_dir, s) is not None}
    todo = [r for r in plan.selected if r["shard"] not in done and not is_staged(out_dir, r["shard"], r["key"])]
    log(f"[shards] {len(windows)} windows from {len(refs) - len(clip_rejects)} clips, {len(clip_rejects)} clips "
        f"rejected; {len(plan.selected)} windows selected into {len(shards)} shards "
        f"({len(done)} already complete, {len(todo)} windows to process)")
    run_samples(todo, cfg, out_dir)
    lap("samples_s")
    assemble([s for s in shards if s not in done], plan, cfg, out_dir)
    shutil.rmtree(os.path.join(out_dir, STAGING), ignore_errors=True)   # every shard is assembled
    lap("assemble_s")

    manifest, failed = [], []
    for shard in shards:
        index = read_index(out_dir, shard)
        if index is None:
            raise RuntimeError(f"shard {shard} is missing after the build")
        manifest.extend({**s, "shard": shard} for s in index["samples"])
        failed.extend(index["failed"])
    # Failed windows are already reject rows (the shard indexes hold them); ingest and selection add theirs.
    rejects = [reject_row(Reject(r["reject_stage"], r["reject_reason"], r["reject_detail"]), r["clip_id"],
                          location=r["location"]) for r in clip_rejects]
    rejects += failed
    rejects += [reject_row(Reject("select", r["reason"], r["detail"]), r["clip_id"], r["key"], r["window"],
                           split=r["split"]) for r in plan.not_selected]
    report = make_report(refs, windows, clip_rejects, plan, manifest, rejects, out_dir)
    _write_parquet(os.path.join(out_dir, "manifest.parquet"), pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA))
    _write_parquet(os.path.join(out_dir, "rejects.parquet"), rejects_table(rejects))
    report["plots"] = write_report_plots(_plot_stats(report, plan, geofences),
                                         os.path.join(out_dir, "plots"))
    lap("report_s")
    report["timings"] = timings
    report["seconds"] = round(time.perf_counter() - started, 3)
    log(f"[shards] done in {report['seconds']:.1f} s ({', '.join(f'{k[:-2]} {v:.1f}' for k, v in timings.items())})")
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, BUILD_FILE), "w") as f:
        json.dump({"fingerprint": fp, "complete": True}, f)
    return BuildResult(out_dir, report, fp, report["seconds"])


def make_report(refs: list[ClipRef], windows: list[dict], clip_rejects: list[dict], plan: Plan,
                manifest: list[dict], rejects: list[dict], out_dir: str) -> dict:
    """Counts that must reconcile, and the selection statistics."""
    n_failed = sum(1 for r in rejects if r["stage"] not in ("ingest", "select"))   # failed in a window stage
    accounting = {
        "clips_in": len(refs),
        "clips_rejected": len(clip_rejects),
        "clips_with_windows": len({w["clip_id"] for w in windows}),
        "windows_cut": len(windows),
        "windows_written": len(manifest),
        "windows_failed": n_failed,
        "windows_not_selected": len(plan.not_selected),
    }
    ok = (accounting["clips_in"] == accounting["clips_rejected"] + accounting["clips_with_windows"]
          and accounting["windows_cut"] == len(manifest) + n_failed + len(plan.not_selected))
    if not ok:   # a bug, never bad input: refuse to publish numbers that do not add up
        raise RuntimeError(f"shard build accounting does not reconcile: {accounting}")
    splits = Counter(m["split"] for m in manifest)
    shard_sizes = {s: os.path.getsize(shard_path(out_dir, s)) for s in plan.shards()}
    return {
        "accounting": accounting,
        "reasons": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "bad_input_reasons": dict(sorted(Counter(r["reason"] for r in rejects
                                                 if Reason(r["reason"]).is_bad_input).items())),
        "splits": {s: splits.get(s, 0) for s in ("train", "val")},
        "balance": plan.balance,
        "shards": {"count": len(shard_sizes), "samples_per_shard": plan.samples_per_shard,
                   "bytes": shard_sizes, "index": {s: os.path.relpath(index_path(out_dir, s), out_dir)
                                                   for s in shard_sizes}},
    }


def _plot_stats(report: dict, plan: Plan, geofences: Geofences) -> dict:
    train = report["balance"].get("train", {})
    return {
        "cells_before": train.get("cells_before", {}), "cells_after": train.get("cells_after", {}),
        "entropy_before": train.get("entropy_before", float("nan")),
        "entropy_after": train.get("entropy_after", float("nan")),
        "splits": report["splits"], "rejects": report["reasons"],
        "tracks": [{"split": r["split"], "lonlat": json.loads(r["track_json"])} for r in plan.selected],
        "geofences": geofences.to_geojson(),
    }
