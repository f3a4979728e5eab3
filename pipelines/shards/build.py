"""The shard build: clips -> balanced, geofenced WebDataset shards + manifest, rejects and report.

    ingest (tasks)  ->  plan (driver: split, stride, balance, shard names)
    -> decode -> detect -> encode videos (one task; for a detector network: task -> actor pool -> task)
    -> CLIP embed -> pack + stage each sample (in that same task with CLIP on the CPU; on GPUs an actor pool,
    then tasks: embedding.placement) -> assemble each shard (tasks)

Output directory:
    train/shard-000000.tar ...   val/shard-000000.tar ...   WebDataset shards
    index/<split>-shard-*.json   per-shard sidecar: samples, failures, bytes, sha256 (resume)
    _staging/                    samples of shards not yet assembled (only while a build runs)
    manifest.parquet             one row per written sample
    rejects.parquet              one row per rejected clip, failed window or window not selected: the stage,
                                 reason and detail (pipelines/rejects.py)
    report.json, plots/*.png     counts, cell distributions and entropies, split counts, reasons
    config.yaml, geofences.geojson (split_lists.json with split.kind official), build.json (fingerprint of what decides the bytes; resume guard; written
                                 whole, ``complete`` last)
    _lock.json                   while a build runs: its owner and heartbeat (pipelines/shards/output.py)

The output is a local directory or an object-storage prefix (``s3://``, ``gs://``): every file goes through
``gaia2.storage`` and is published whole. After the build, the gate (``gate.max_reject_fraction``,
``gate.min_samples``) decides whether it failed; a failed build keeps everything it wrote.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import groupby
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from gaia2 import storage
from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.geofence import Geofences
from gaia2.curation.official import SPLIT_LISTS_FILE, OfficialSplit, SplitListError
from gaia2.curation.report import write_report_plots
from gaia2.schema.errors import Reason
from pipelines.rejects import Reject, reject_row, rejects_table
from pipelines.retry import actor_retry_args, task_retry_args
from pipelines.shards.decode import decode_batch
from pipelines.shards.detect import DetectAgents
from pipelines.shards.embed import EmbedClip
from pipelines.shards.encode import encode_batch, pack_batch
from pipelines.shards.finish import encode_sample_batch, window_sample_batch
from pipelines.shards.ingest import dedupe_clip_ids, ingest_batch, with_records
from pipelines.shards.output import (BUILD_FILE, OutputConflict, OutputLock, OutputLocked, fingerprint, prepare,
                                     write_build_record)
from pipelines.shards.plan import Plan, make_plan
from pipelines.shards.sources import ClipRef, SourceError, is_nuscenes, list_clips, nuscenes_root, source_summary
from pipelines.shards.window import window_batch
from pipelines.shards.write import (SAMPLE_FIELDS, STAGING, assemble_shard, index_path, is_staged, read_index,
                                    shard_path, stage_batch, staged_keys)

__all__ = ["BUILD_FILE", "BuildFailed", "BuildResult", "OutputConflict", "OutputLocked", "build_shards"]


class BuildFailed(RuntimeError):
    """The build ran to the end but failed its gate (too many rejects, too few samples); its output is kept."""

    def __init__(self, message: str, result: "BuildResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class BuildResult:
    out_dir: str
    report: dict
    fingerprint: str
    seconds: float


@contextmanager
def data_context(cfg: ShardBuildConfig) -> Iterator[None]:
    """Ray Data as the build runs it: per-operator reservation off unless ``resources.reserve_per_operator``.
    On a small machine it starves the heavy window stage, and it holds even a lone ingest stage to one task at
    a time for its first second (180 clips on 2 cores: 1.8 s of ingest with it, 1.2 s without)."""
    ctx = ray.data.DataContext.get_current()
    reservation = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = cfg.resources.reserve_per_operator
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = reservation


def run_ingest(refs: list[ClipRef], cfg: ShardBuildConfig) -> list[dict]:
    if not refs:
        return []
    items = [{**asdict(ref), "record": ref.record or ""} for ref in refs]
    with data_context(cfg):   # a Dataset keeps the context it was made in
        ds = block_dataset(items, [1] * len(items), cfg.ingest.batch_size, cfg.resources.ingest_cpus).map_batches(
            ingest_batch, fn_kwargs={"config_json": cfg.model_dump_json()}, batch_size=None,
            num_cpus=cfg.resources.ingest_cpus, **task_retry_args(cfg.retry))
        return with_records(ds.take_all())


def run_samples(todo: list[dict], cfg: ShardBuildConfig, out_dir: str) -> None:
    """Decode, annotate, encode and stage every window in ``todo``."""
    if todo:
        with data_context(cfg):
            _run_samples(todo, cfg, out_dir)


def _run_samples(todo: list[dict], cfg: ShardBuildConfig, out_dir: str) -> None:
    config_json = cfg.model_dump_json()
    det, emb, res = cfg.detection, cfg.embedding, cfg.resources
    cols = ("key", "clip_id", "drive_id", "window", "start_time", "split", "cell", "weight", "shard",
            "clip_json", "track_json")
    # One block per window task (the first stage takes whole blocks: batch_size None).
    # A clip's windows stay in one task where they fit: they decode the frames they share once.
    runs = [len(list(g)) for _, g in groupby(r["clip_id"] for r in todo)]
    ds = block_dataset([{c: r[c] for c in cols} for r in todo], runs, res.window_batch_size, res.window_cpus)
    # A worker lost mid-task (node gone, OOM-killed) is retried by Ray, a bounded number of times; errors
    # inside a stage are retried or rejected row by row (pipelines/retry.py).
    task = {"batch_size": res.window_batch_size, "num_cpus": res.window_cpus, **task_retry_args(cfg.retry)}
    first = {**task, "batch_size": None}
    detect_args = {"kind": det.kind, "checkpoint": det.checkpoint, "max_agents": det.max_agents,
                   "score_threshold": det.score_threshold}
    # CLIP on the CPU (embedding.placement task) finishes each sample in the task that encoded it
    # (pipelines/shards/finish.py); on GPUs it is an actor pool, and packing and staging are tasks after it.
    finish = {"out_dir": out_dir, "clip_path": emb.clip_path, "retry_json": cfg.retry.model_dump_json()}
    if det.kind == "ground_truth":   # no model: decode, annotate and encode in one function
        fn, kwargs, fn_task = window_batch, {"config_json": config_json, "detect_args": detect_args}, first
    else:                            # the detector network is an actor pool (loaded once, GPUs if asked)
        ds = ds.map_batches(decode_batch, fn_kwargs={"config_json": config_json}, **first)
        ds = ds.map_batches(DetectAgents, fn_constructor_kwargs={**detect_args, "retry": cfg.retry},
                            batch_size=det.batch_size, compute=ray.data.ActorPoolStrategy(size=det.concurrency),
                            num_cpus=det.num_cpus, num_gpus=det.num_gpus, **actor_retry_args(cfg.retry))
        fn, kwargs, fn_task = encode_batch, {"config_json": config_json}, task
    if emb.in_task():
        fn = window_sample_batch if fn is window_batch else encode_sample_batch
        ds = ds.map_batches(fn, fn_kwargs={**kwargs, **finish}, **fn_task)
    else:
        ds = ds.map_batches(fn, fn_kwargs=kwargs, **fn_task)
        ds = ds.map_batches(
            EmbedClip, fn_constructor_kwargs={"path": emb.clip_path, "retry": cfg.retry},
            batch_size=emb.batch_size, compute=ray.data.ActorPoolStrategy(size=emb.concurrency),
            num_cpus=emb.num_cpus, num_gpus=emb.num_gpus, **actor_retry_args(cfg.retry))
        pack = {"batch_size": emb.batch_size, "num_cpus": res.pack_cpus, **task_retry_args(cfg.retry)}
        ds = ds.map_batches(pack_batch, **pack)
        ds = ds.map_batches(stage_batch, fn_kwargs={"out_dir": out_dir}, **pack)
    staged = ds.take_all()
    if os.environ.get("GAIA2_DATA_STATS"):   # Ray Data's per-operator timings, for tuning
        print(ds.stats())
    if len(staged) != len(todo):
        raise RuntimeError(f"{len(todo)} windows to stage, {len(staged)} staged")


def task_blocks(runs: Sequence[int], most: int, slots: int) -> list[int]:
    """Rows of each task's block. ``runs``: the lengths of consecutive rows that belong together (a clip's
    windows, which decode their shared frames once), split only where one is longer than the block.

    A block holds up to ``most`` rows (a stage's batch size) while that leaves as much for each of the other
    ``slots`` (tasks at a time), then up to the remainder's share of a slot (guided self-scheduling), so the
    last tasks end together rather than one full task running alone on an otherwise idle machine. A block
    ends early rather than split a run that would not fit.
    """
    runs = [r for r in runs if r > 0]
    sizes, left, i, taken = [], sum(runs), 0, 0   # taken: rows of runs[i] already in a block
    while left > 0:
        target, size = min(most, -(-left // slots)), 0
        while i < len(runs) and size + runs[i] - taken <= target:
            size, i, taken = size + runs[i] - taken, i + 1, 0
        if size == 0:   # a run longer than the block: split it
            size, taken = target, taken + target
        sizes.append(size)
        left -= size
    return sizes


def block_dataset(rows: list[dict], runs: Sequence[int], most: int, cpus_per_task: float) -> ray.data.Dataset:
    """``rows`` as a Dataset of ``task_blocks``, for a first stage that takes whole blocks (batch_size None).

    A task reads one object, not a bundle of one-row blocks, each put, tracked and concatenated on its own (as
    ``from_items`` makes them), and the stage's last tasks are short.
    """
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
    table = pa.Table.from_pylist(rows)
    starts = np.cumsum([0, *task_blocks(runs, most, slots)])
    return ray.data.from_arrow([table.slice(a, b - a) for a, b in zip(starts, starts[1:])])


def assemble(shards: list[str], plan: Plan, cfg: ShardBuildConfig, out_dir: str) -> None:
    """Assemble each shard from its staged samples, one Ray task per shard."""
    rows: dict[str, list[dict]] = {s: [] for s in shards}
    for r in plan.selected:
        if r["shard"] in rows:
            rows[r["shard"]].append({f: r[f] for f in SAMPLE_FIELDS})
    task = ray.remote(num_cpus=cfg.resources.assemble_cpus, **task_retry_args(cfg.retry))(assemble_shard)
    ray.get([task.remote(out_dir, s, rows[s]) for s in shards])


def _write_parquet(path: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_atomic(path, sink.getvalue().to_pybytes())


MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("split", pa.string()), ("cell", pa.string()),
    ("weight", pa.float64()), ("clip_id", pa.string()), ("drive_id", pa.string()), ("window", pa.int64()),
    ("start_time", pa.float64())])


def build_shards(source: str, out_dir: str, cfg: ShardBuildConfig,
                 log: Callable[[str], None] = print) -> BuildResult:
    """Run the whole build; resumes onto an existing ``out_dir`` of the same inputs and config.

    Raises ``OutputLocked`` while another build writes ``out_dir``, ``OutputConflict`` when it holds a build
    of other inputs, and ``BuildFailed`` (carrying the result) when the finished build fails its gate."""
    started = time.perf_counter()
    out_dir = storage.absolute(out_dir)
    refs = list_clips(source)
    geofences = Geofences.from_geojson(cfg.split.geofences) if cfg.split.geofences else Geofences.default()
    official = official_split(cfg, source)
    with OutputLock(out_dir, cfg.lock.heartbeat_s, cfg.lock.stale_s, log) as lock:
        result = _build(source, refs, geofences, official, out_dir, cfg, lock, log, started)
    failures = gate_failures(result.report, cfg)
    if failures:
        raise BuildFailed(f"the build of {storage.redact(out_dir)} failed its gate: {'; '.join(failures)} "
                          f"(everything written is kept; see rejects.parquet and report.json)", result)
    return result


def official_split(cfg: ShardBuildConfig, source: str) -> OfficialSplit | None:
    """The lists of ``split.kind: official`` (None for geofences): ``split.lists``, or the nuScenes source's own
    version; a ``SourceError`` naming ``split.lists`` when there are none or they cannot be read."""
    if cfg.split.kind != "official":
        return None
    lists = cfg.split.lists
    if lists is None:
        if not is_nuscenes(source):
            raise SourceError("split.lists: required with split.kind official for a source other than nuscenes://")
        lists = f"nuscenes-{nuscenes_root(source)[1]}"
    try:
        return OfficialSplit.load(lists)
    except SplitListError as err:
        raise SourceError(str(err)) from None


def gate_failures(report: dict, cfg: ShardBuildConfig) -> list[str]:
    """Why a finished build fails ``cfg.gate``; empty when it passes."""
    acc, gate, out = report["accounting"], cfg.gate, []
    fractions = report["gate"]["reject_fraction"]
    for what, frac in fractions.items():
        if frac > gate.max_reject_fraction:
            out.append(f"{frac:.1%} of {what} rejected > gate.max_reject_fraction {gate.max_reject_fraction:.1%}")
    if acc["windows_written"] < gate.min_samples:
        out.append(f"{acc['windows_written']} samples written < gate.min_samples {gate.min_samples}")
    return out


def _build(source: str, refs: list[ClipRef], geofences: Geofences, official: OfficialSplit | None, out_dir: str,
           cfg: ShardBuildConfig, lock: OutputLock, log: Callable[[str], None], started: float) -> BuildResult:
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    rows = run_ingest(refs, cfg)   # reads only: the output is untouched until the fingerprint is checked
    rows, _ = dedupe_clip_ids(rows, [ref.location for ref in refs])   # one id, one clip: later ones are rejects
    lap("ingest_s")
    fp = fingerprint(cfg, refs, rows, geofences, official.digest() if official else "")
    resuming = prepare(out_dir, cfg, fp, geofences)
    if official is not None:   # the lists this build split by, beside its geofences (gaia2 shards verify reads them)
        storage.write_text(storage.join(out_dir, SPLIT_LISTS_FILE), json.dumps(official.to_json(), sort_keys=True))
    log(f"[shards] {len(refs)} clips from {storage.redact(source)} -> {storage.redact(out_dir)}"
        + (" (resuming)" if resuming else ""))
    windows = [r for r in rows if r["kind"] == "window"]
    clip_rejects = [r for r in rows if r["kind"] == "reject"]
    plan = make_plan(windows, cfg, geofences, official)
    lap("select_s")
    shards = plan.shards()
    done = {s for s in shards if read_index(out_dir, s) is not None}
    staged = staged_keys(out_dir)
    todo = [r for r in plan.selected if r["shard"] not in done and not is_staged(out_dir, r["shard"], r["key"], staged)]
    log(f"[shards] {len(windows)} windows from {len(refs) - len(clip_rejects)} clips, {len(clip_rejects)} clips "
        f"rejected; {len(plan.selected)} windows selected into {len(shards)} shards "
        f"({len(done)} already complete, {len(todo)} windows to process)")
    run_samples(todo, cfg, out_dir)
    lap("samples_s")
    lock.check()
    assemble([s for s in shards if s not in done], plan, cfg, out_dir)
    storage.rmtree(storage.join(out_dir, STAGING))   # every shard is assembled
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
                          location=storage.redact(r["location"])) for r in clip_rejects]
    rejects += failed
    rejects += [reject_row(Reject("select", r["reason"], r["detail"]), r["clip_id"], r["key"], r["window"],
                           split=r["split"]) for r in plan.not_selected]
    report = make_report(refs, windows, clip_rejects, plan, manifest, rejects, out_dir)
    report["split"] = {"kind": cfg.split.kind, **({"lists": official.name} if official else {})}
    report["source"] = source_summary(refs)
    _write_parquet(storage.join(out_dir, "manifest.parquet"), pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA))
    _write_parquet(storage.join(out_dir, "rejects.parquet"), rejects_table(rejects))
    report["plots"] = _write_plots(_plot_stats(report, plan, geofences), out_dir)
    lap("report_s")
    report["timings"] = timings
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["gate"]["failures"] = gate_failures(report, cfg)
    log(f"[shards] done in {report['seconds']:.1f} s ({', '.join(f'{k[:-2]} {v:.1f}' for k, v in timings.items())})")
    storage.write_text(storage.join(out_dir, "report.json"), json.dumps(report, indent=1, sort_keys=True))
    lock.check()
    write_build_record(out_dir, fp, complete=True, gate_passed=not report["gate"]["failures"])
    return BuildResult(out_dir, report, fp, report["seconds"])


def _write_plots(stats: dict, out_dir: str) -> list[str]:
    """The report's plots under ``out_dir/plots`` (drawn locally, then published like every other file)."""
    with tempfile.TemporaryDirectory(prefix="gaia2-plots-") as tmp:
        paths = write_report_plots(stats, tmp)
        for path in paths:
            storage.upload_file(path, storage.join(out_dir, "plots", os.path.basename(path)))
        return [storage.join(out_dir, "plots", os.path.basename(p)) for p in paths]


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
    # What the gate judges: the share of clips rejected at ingest, and of selected windows that failed.
    reject_fraction = {"clips": accounting["clips_rejected"] / max(1, accounting["clips_in"]),
                       "windows": n_failed / max(1, len(manifest) + n_failed)}
    shard_sizes = {s: storage.size(shard_path(out_dir, s)) for s in plan.shards()}
    return {
        "accounting": accounting,
        "reasons": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "bad_input_reasons": dict(sorted(Counter(r["reason"] for r in rejects
                                                 if Reason(r["reason"]).is_bad_input).items())),
        "splits": {s: splits.get(s, 0) for s in ("train", "val")},
        "gate": {"reject_fraction": {k: round(v, 6) for k, v in reject_fraction.items()}},
        "balance": plan.balance,
        "shards": {"count": len(shard_sizes), "samples_per_shard": plan.samples_per_shard,
                   "bytes": shard_sizes, "index": {s: index_path("", s)
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
