"""Stage 5: write one shard from its samples, atomically, plus its index sidecar.

The shard's name and membership come from the plan (decided before any pixel is decoded), so the
output does not depend on which worker finished first. Commit order: the index sidecar is written
first, then the tar is renamed into place; a tar under its final name therefore always has its index.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from gaia2.schema.sample import tar_archive


def shard_path(out_dir: str, shard: str) -> str:
    return os.path.join(out_dir, f"{shard}.tar")


def index_path(out_dir: str, shard: str) -> str:
    return os.path.join(out_dir, "index", shard.replace("/", "-") + ".json")


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index(out_dir: str, shard: str) -> dict | None:
    """The index of a complete shard, or None if the shard is missing or was left partial."""
    tar, idx = shard_path(out_dir, shard), index_path(out_dir, shard)
    if not (os.path.exists(tar) and os.path.exists(idx)):
        return None
    with open(idx) as f:
        index = json.load(f)
    return index if index.get("bytes") == os.path.getsize(tar) else None


def write_shard_group(group: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """``map_groups`` function: all rows of one shard -> the shard on disk and a one-row summary."""
    order = np.argsort(group["key"].astype(str), kind="stable")
    shard = str(group["shard"][0])
    samples, failed = [], []
    for i in order:
        row = {k: v[i] for k, v in group.items()}
        info = {"key": str(row["key"]), "clip_id": str(row["clip_id"]), "drive_id": str(row["drive_id"]),
                "window": int(row["window"]), "start_time": float(row["start_time"]),
                "split": str(row["split"]), "cell": str(row["cell"]), "weight": float(row["weight"])}
        if row["error"]:
            failed.append({**info, "error": str(row["error"])})
        else:
            samples.append((info, bytes(row["sample"])))
    data = tar_archive([s for _, s in samples])
    index = {"shard": shard, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "samples": [info for info, _ in samples], "failed": failed}
    _atomic_write(index_path(out_dir, shard), json.dumps(index, sort_keys=True, indent=1).encode())
    _atomic_write(shard_path(out_dir, shard), data)
    return {"shard": np.asarray([shard]), "index": np.asarray([json.dumps(index)], dtype=object)}
