"""Check a finished shard build against its invariants, from its files alone.

    gaia2 shards verify --out SHARDS [--source CLIPS]

- every input clip (given ``--source``) and every window is accounted for exactly once: written
  (manifest), rejected as bad input, or not selected, each with a reason;
- the shards hold exactly the manifest's samples, with the contract's members, dtypes and shapes;
- no training sample's GPS track touches a validation geofence, every validation one does (with
  ``split.kind: official``: every sample's split is its clip's in the build's ``split_lists.json``);
- no two selected windows of one drive (in either split) start closer than the minimum stride;
- balancing made the joint-cell distribution flatter (normalised entropy after > before);
- every shard matches the size and SHA-256 recorded in its index.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
from collections import Counter, defaultdict

import numpy as np
import pyarrow.parquet as pq
import yaml

from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.geofence import Geofences
from gaia2.curation.official import SPLIT_LISTS_FILE, OfficialSplit
from gaia2.schema.errors import Reason
from pipelines.shards.write import index_path


def _samples(tar_path: str):
    """Yield (key, {extension: bytes}) from a shard, grouped by key as WebDataset does."""
    current, files = None, {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            if key != current and current is not None:
                yield current, files
                files = {}
            current = key
            files[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current, files


def verify_build(out_dir: str, source: str | None = None) -> dict:
    """Returns {"ok": bool, "checks": {name: bool}, "problems": [str], "counts": {...}}."""
    problems: list[str] = []
    checks: dict[str, bool] = {}

    def check(name: str, ok: bool, problem: str) -> None:
        checks[name] = checks.get(name, True) and ok
        if not ok:
            problems.append(problem)

    with open(os.path.join(out_dir, "config.yaml")) as f:
        cfg = ShardBuildConfig.model_validate(yaml.safe_load(f))
    with open(os.path.join(out_dir, "report.json")) as f:
        report = json.load(f)
    fences = Geofences.from_geojson(os.path.join(out_dir, "geofences.geojson"))
    official = None
    if cfg.split.kind == "official":
        with open(os.path.join(out_dir, SPLIT_LISTS_FILE)) as f:
            official = OfficialSplit.from_json(json.load(f))
    manifest = pq.read_table(os.path.join(out_dir, "manifest.parquet")).to_pylist()
    rejects = pq.read_table(os.path.join(out_dir, "rejects.parquet")).to_pylist()

    # Accounting: windows are unique across written and rejected rows; clips are covered.
    window_rows = [(m["key"], "written") for m in manifest] + [(r["key"], r["reason"]) for r in rejects if r["key"]]
    keys = [k for k, _ in window_rows]
    dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
    check("accounted_once", not dupes, f"windows accounted for more than once: {dupes[:5]}")
    check("accounted_once", len(keys) == report["accounting"]["windows_cut"],
          f"{len(keys)} window rows, report says {report['accounting']['windows_cut']} windows cut")
    check("reasons", all(r["stage"] and r["reason"] in Reason._value2member_map_ and r["detail"] for r in rejects),
          "a reject row without a stage, a known reason or a detail")
    clip_ids = {m["clip_id"] for m in manifest} | {r["clip_id"] for r in rejects}
    if source is not None:
        from pipelines.shards.sources import list_clips

        refs = list_clips(source)
        check("accounted_once", len(clip_ids) == len(refs) == report["accounting"]["clips_in"],
              f"{len(refs)} clips in the source, {len(clip_ids)} accounted for")

    # Shards: contents match the manifest and the index; members follow the contract.
    by_key = {m["key"]: m for m in manifest}
    seen: set[str] = set()
    starts: dict[str, list[float]] = defaultdict(list)   # per drive, across both splits
    for tar_path in sorted(glob.glob(os.path.join(out_dir, "*", "shard-*.tar"))):
        shard = os.path.relpath(tar_path, out_dir)[: -len(".tar")]
        with open(index_path(out_dir, shard)) as f:
            index = json.load(f)
        data = open(tar_path, "rb").read()
        check("checksums", hashlib.sha256(data).hexdigest() == index["sha256"], f"{shard}: SHA-256 differs from its index")
        for key, files in _samples(tar_path):
            seen.add(key)
            row = by_key.get(key)
            if row is None:
                check("shards_match_manifest", False, f"{shard}: sample {key} not in the manifest")
                continue
            meta = json.loads(files["json"])
            n_cams, t = len(meta["cameras"]), cfg.window.frames
            boxes = np.load(io.BytesIO(files["boxes.npy"]))
            valid = np.load(io.BytesIO(files["boxes_valid.npy"]))
            clip = np.load(io.BytesIO(files["clip.npy"]))
            ok = (boxes.dtype == np.float32 and boxes.shape == (t, n_cams, cfg.detection.max_agents, 13)
                  and valid.dtype == bool and valid.shape == boxes.shape[:3]
                  and clip.dtype == np.float32 and clip.ndim == 2 and clip.shape[0] == n_cams
                  and all(f"{c['name']}.mp4" in files for c in meta["cameras"]))
            check("sample_contract", ok, f"{key}: members, dtypes or shapes off the contract")
            check("shards_match_manifest", row["shard"] == shard and meta["split"] == row["split"],
                  f"{key}: shard/split differ between tar and manifest")
            if official is not None:
                check("official_split", official.split_of(meta["clip_id"]) == meta["split"],
                      f"{key}: split {meta['split']} but {official.name} puts {meta['clip_id']} in "
                      f"{official.split_of(meta['clip_id'])}")
            else:
                track = np.stack([meta["gps"]["longitude"], meta["gps"]["latitude"]], axis=1)
                touches = fences.touches(track)
                check("geofence_split", touches == (meta["split"] == "val"),
                      f"{key}: split {meta['split']} but its track {'touches' if touches else 'misses'} a geofence")
            starts[meta["drive_id"]].append(meta["start_time_s"])
    check("shards_match_manifest", seen == set(by_key), f"{len(set(by_key) - seen)} manifest samples missing from the shards")

    stride = cfg.balance.min_stride_s
    close = [d for d, s in starts.items() if len(s) > 1 and np.min(np.diff(sorted(s))) < stride - 1e-6]
    check("min_stride", not close, f"drives with windows closer than {stride} s: {close[:5]}")
    bal = report["balance"].get("train")
    if bal:
        check("balance_flatter", bal["entropy_after"] > bal["entropy_before"] or len(bal["cells_before"]) < 2,
              f"normalised entropy not increased: {bal['entropy_before']:.3f} -> {bal['entropy_after']:.3f}")
    counts = {"clips": len(clip_ids), "windows": len(keys), "written": len(manifest),
              "train": sum(m["split"] == "train" for m in manifest), "val": sum(m["split"] == "val" for m in manifest)}
    return {"ok": not problems, "checks": checks, "problems": problems, "counts": counts,
            "entropy": {"before": bal["entropy_before"], "after": bal["entropy_after"]} if bal else None}
