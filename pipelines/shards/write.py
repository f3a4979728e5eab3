"""Writing shards: each sample is staged as its own file, then each shard is assembled from them.

The shard's name and membership come from the plan (decided before any pixel is decoded), so the
output does not depend on which worker finished first, and no shuffle is needed: the packing stage
stages each sample as ``_staging/<split>-shard-NNNNNN/<key>.tarpart`` (tar member bytes) or
``<key>.failed.json`` (its reject: stage, reason, detail); assembly concatenates a shard's staged
samples in key order, and its index lists the failed ones as rejects-table rows.

Commit order, for resume: every file is published whole (``gaia2.storage.write_atomic``: a temporary
name unique to the writer, then one rename, or a server-side copy on object storage); a shard's index
sidecar is written before its tar, so a tar under its final name always has its index; staged files
are deleted only after that. A rerun keeps complete shards, reuses staged samples of incomplete ones
and redoes the rest. ``out_dir`` is a local directory or an object-storage URI alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np

from gaia2 import storage
from gaia2.schema.sample import tar_trailer
from pipelines.rejects import Reject, batch_rejects, reject_columns, reject_row

STAGING = "_staging"
# What a shard's index (and the manifest) records of each sample.
SAMPLE_FIELDS = ("key", "clip_id", "drive_id", "window", "start_time", "split", "cell", "weight")
_PART, _FAILED = ".tarpart", ".failed.json"


def shard_path(out_dir: str, shard: str) -> str:
    return storage.join(out_dir, f"{shard}.tar")


def index_path(out_dir: str, shard: str) -> str:
    return storage.join(out_dir, "index", shard.replace("/", "-") + ".json")


def staging_dir(out_dir: str, shard: str) -> str:
    return storage.join(out_dir, STAGING, shard.replace("/", "-"))


def atomic_write(path: str, data: bytes | list[bytes], durable: bool = True) -> None:
    """Publish ``data`` whole at ``path`` (a local path or a URI); ``durable`` also syncs a local file to disk
    before the rename (shards, indexes). Staged samples skip the sync: a crash that loses one only means
    that sample is redone."""
    storage.write_atomic(path, data, durable)


def read_index(out_dir: str, shard: str) -> dict | None:
    """The index of a complete shard, or None if the shard is missing or was left partial."""
    size = storage.size(shard_path(out_dir, shard))
    if size is None:
        return None
    try:
        index = json.loads(storage.read_bytes(index_path(out_dir, shard)))
    except FileNotFoundError:
        return None
    return index if index.get("bytes") == size else None


def staged_keys(out_dir: str) -> set[tuple[str, str]]:
    """(staging folder, key) of every staged sample, from one listing (one request per page on object storage)."""
    out = set()
    for rel in storage.list_files(storage.join(out_dir, STAGING)):
        folder, _, name = rel.partition("/")
        for suffix in (_PART, _FAILED):
            if name.endswith(suffix):
                out.add((folder, name[: -len(suffix)]))
    return out


def is_staged(out_dir: str, shard: str, key: str, staged: set[tuple[str, str]] | None = None) -> bool:
    """Whether ``key`` of ``shard`` is staged; ``staged`` (from ``staged_keys``) saves a lookup per sample."""
    if staged is not None:
        return (shard.replace("/", "-"), key) in staged
    d = staging_dir(out_dir, shard)
    return storage.exists(storage.join(d, key + _PART)) or storage.exists(storage.join(d, key + _FAILED))


def stage_sample(out_dir: str, shard: str, key: str, sample: bytes, reject: Reject | None) -> None:
    """Stage one sample's tar members, or why it was rejected."""
    d = staging_dir(out_dir, shard)
    if reject is not None:
        atomic_write(storage.join(d, key + _FAILED), json.dumps(asdict(reject)).encode(), durable=False)
    else:
        atomic_write(storage.join(d, key + _PART), sample, durable=False)


def assemble_shard(out_dir: str, shard: str, rows: list[dict]) -> dict:
    """Concatenate the staged samples of ``rows`` (the plan's rows of this shard) into the shard.

    Returns the shard's index: its samples (manifest rows), failures (rejects-table rows), size and SHA-256.
    """
    d = staging_dir(out_dir, shard)
    fragments, samples, failed = [], [], []
    for row in sorted(rows, key=lambda r: r["key"]):
        info = {k: row[k] for k in SAMPLE_FIELDS}
        try:
            fragments.append(storage.read_bytes(storage.join(d, row["key"] + _PART)))
            samples.append(info)
            continue
        except FileNotFoundError:
            pass
        try:
            reject = Reject(**json.loads(storage.read_bytes(storage.join(d, row["key"] + _FAILED))))
        except FileNotFoundError:
            raise RuntimeError(f"shard {shard}: sample {row['key']} was never staged") from None
        failed.append(reject_row(reject, row["clip_id"], row["key"], int(row["window"]), shard, row["split"]))
    chunks = [*fragments, tar_trailer(sum(len(f) for f in fragments))]   # the tar, never joined into one copy
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    index = {"shard": shard, "bytes": sum(len(c) for c in chunks), "sha256": digest.hexdigest(),
             "samples": samples, "failed": failed}
    atomic_write(index_path(out_dir, shard), json.dumps(index, sort_keys=True, indent=1).encode())
    atomic_write(shard_path(out_dir, shard), chunks)
    storage.rmtree(d)
    return index


def stage_batch(batch: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """Ray Data task: stage each packed sample; pass on only the keys and rejects (nothing heavy
    reaches the driver)."""
    rejects = batch_rejects(batch, len(batch["key"]))
    for key, shard, sample, reject in zip(batch["key"], batch["shard"], batch["sample"], rejects):
        stage_sample(out_dir, str(shard), str(key), bytes(sample), reject)
    return {"key": np.asarray(batch["key"], dtype=object)} | reject_columns(rejects)
