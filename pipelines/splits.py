"""The train / val splits of a shard directory, as the training jobs read them: shard files, sample counts
and a first look at one sample, for the checks a job makes before it starts any work."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile

import numpy as np


class DataError(ValueError):
    """Shards that cannot feed a model (a missing split, members or shapes that do not fit it)."""


def split_files(shards: str, split: str, produced_by: str) -> list[str]:
    """The split's tar shards in name order; a missing or empty split is a ``DataError`` that says which
    command writes such a directory (``produced_by``)."""
    files = sorted(glob.glob(os.path.join(shards, split, "*.tar")))
    if not files:
        raise DataError(f"data.shards: no {split}/*.tar under {shards!r} (is it a `{produced_by}` output?)")
    return files


def split_counts(shards: str, produced_by: str) -> dict[str, int]:
    """Samples per split, from the directory's manifest.parquet."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    manifest = os.path.join(shards, "manifest.parquet")
    if not os.path.isfile(manifest):
        raise DataError(f"data.shards: {shards!r} has no manifest.parquet (is it a `{produced_by}` output?)")
    splits = pq.read_table(manifest, columns=["split"]).column("split")
    return {s: int(pc.sum(pc.equal(splits, s)).as_py() or 0) for s in ("train", "val")}


def first_sample(tar_path: str, members: tuple[str, ...]) -> dict:
    """The first sample of a shard, ``{"__key__", "json": dict, "<name>.npy": array, ...}`` (other members
    as bytes); a ``DataError`` names the shard when one of ``members`` is missing."""
    out: dict = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if out and key != out["__key__"]:
                break
            out["__key__"] = key
            data = tar.extractfile(member).read()
            if ext == "json":
                out[ext] = json.loads(data)
            elif ext.endswith(".npy"):
                out[ext] = np.load(io.BytesIO(data), allow_pickle=False)
            else:
                out[ext] = data
    missing = [m for m in members if m not in out]
    if missing:
        raise DataError(f"{tar_path}: sample {out.get('__key__')!r} lacks {missing}")
    return out
