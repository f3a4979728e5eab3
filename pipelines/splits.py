"""The train / val splits of a shard directory, as the training jobs read them: shard files, sample counts
and a first look at one sample, for the checks a job makes before it starts any work."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np

from gaia2 import storage


class DataError(ValueError):
    """Shards that cannot feed a model (a missing split, members or shapes that do not fit it)."""


def split_files(shards: str, split: str, produced_by: str) -> list[str]:
    """The split's tar shards in name order; a missing or empty split is a ``DataError`` that says which
    command writes such a directory (``produced_by``)."""
    root = storage.absolute(shards)
    try:
        names = [r for r in storage.list_files(storage.join(root, split), recursive=False) if r.endswith(".tar")]
    except OSError as err:   # no such bucket, no credentials
        raise DataError(f"data.shards: {storage.redact(shards)!r} cannot be read ({err})") from None
    if not names:
        raise DataError(f"data.shards: no {split}/*.tar under {storage.redact(shards)!r} (is it a `{produced_by}` "
                        f"output?)")
    return [storage.join(root, split, n) for n in sorted(names)]


def read_manifest(shards: str, produced_by: str, columns: list[str] | None = None):
    """The directory's manifest.parquet (a local path or a URI) as a pyarrow Table; a ``DataError`` without one."""
    import pyarrow.parquet as pq

    path = storage.join(storage.absolute(shards), "manifest.parquet")
    try:
        with storage.open_input(path) as f:
            names = pq.read_schema(f).names
            f.seek(0)
            return pq.read_table(f, columns=[c for c in columns if c in names] if columns else None)
    except FileNotFoundError:
        raise DataError(f"data.shards: {storage.redact(shards)!r} has no manifest.parquet (is it a `{produced_by}` "
                        f"output?)") from None


def split_counts(shards: str, produced_by: str) -> dict[str, int]:
    """Samples per split, from the directory's manifest.parquet."""
    import pyarrow.compute as pc

    splits = read_manifest(shards, produced_by, ["split"]).column("split")
    return {s: int(pc.sum(pc.equal(splits, s)).as_py() or 0) for s in ("train", "val")}


def first_sample(tar_path: str, members: tuple[str, ...]) -> dict:
    """The first sample of a shard, ``{"__key__", "json": dict, "<name>.npy": array, ...}`` (other members
    as bytes); a ``DataError`` names the shard when one of ``members`` is missing."""
    out: dict = {}
    with storage.open_input(tar_path) as f, tarfile.open(fileobj=f) as tar:
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
        raise DataError(f"{storage.redact(tar_path)}: sample {out.get('__key__')!r} lacks {missing}")
    return out
