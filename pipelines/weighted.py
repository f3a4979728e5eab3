"""Weighted training epochs: the shard build's per-sample weights reach the training loaders.

The build (``pipelines/shards/plan.py``) down-samples common cells of the metadata's joint distribution and
gives the samples of rare cells a ``weight`` above 1 (manifest.parquet; encode-latents copies the rows).
Training draws each epoch's samples in proportion to those weights, with replacement:

    manifest keys + weights, (seed, epoch) --epoch_draws-->  N draws (N = the split's samples)
        --worker_draws(rank, world)-->  this worker's N // world of them, in the drawn order
        --epoch_dataset-->  a Ray dataset reading exactly those samples, in that order, from the tar shards

The draws are systematic resampling over a seeded permutation: a sample of expected count c = N w / sum(w)
is drawn floor(c) or ceil(c) times (ceil with probability c - floor(c)), then the draws are shuffled. That is
sampling in proportion to the weights with the least variance; with equal weights (or no weight column) it
draws every sample exactly once, i.e. the unweighted epoch. An epoch keeps N draws, so steps and schedules
mean what they did. The draws are a pure function of (weights, seed, epoch), and the dataset reads them in
order (``preserve_order``), so a run resumed at (epoch, batch) sees the same batches as one that never stopped.

Samples are read by byte range: a tar shard's member offsets come from one scan of its headers (cached per
process), so a worker reads only the samples it draws, not every shard.
"""

from __future__ import annotations

import functools
import json
import os
import tarfile
from typing import Callable

import numpy as np

from gaia2 import storage
from pipelines.splits import DataError, split_files

__all__ = ["check_weights", "epoch_dataset", "epoch_draws", "locate", "manifest_weights", "ordered", "read_members",
           "shard_index", "worker_draws"]

_SALT = 0x6A1A2   # keeps these draws apart from other generators seeded with the run's seed


def check_weights(weights, keys=None) -> np.ndarray:
    """``weights`` as float64 (N,), or a ``DataError`` naming the first bad one (negative, NaN, infinite) or
    saying that all are zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0:
        raise DataError(f"weights: expected a non-empty list of per-sample weights, got shape {w.shape}")
    for bad, what in ((~np.isfinite(w), "not finite (NaN or infinite)"), (w < 0, "negative")):
        if bad.any():
            i = int(np.argmax(bad))
            name = f"sample {keys[i]!r}" if keys is not None else f"index {i}"
            raise DataError(f"weight: {int(bad.sum())} sample weights are {what}, e.g. {name}: {w[i]}")
    if not w.any():
        raise DataError(f"weight: all {len(w)} sample weights are zero: nothing to draw")
    return w


def epoch_draws(weights, seed: int, epoch: int) -> np.ndarray:
    """Sample weights (N,) and the epoch -> (N,) int64 indices of the epoch's samples in training order.

    Expected draws of sample i: N w_i / sum(w); each is drawn floor or ceil of that (systematic resampling
    over a seeded permutation), then the draws are shuffled. Equal weights draw every sample once."""
    w = check_weights(weights)
    n = len(w)
    rng = np.random.default_rng(np.random.SeedSequence([_SALT, int(seed) % 2**64, int(epoch)]))
    order = rng.permutation(n)
    if np.all(w == w[0]):
        return order
    ends = np.cumsum(w[order]) * (n / w.sum())   # expected draws so far, 0 .. N
    ends[-1] = n
    u = rng.random()
    # Points u, u + 1, ..., u + N - 1: sample order[j] gets those in [ends[j - 1], ends[j]), N in all.
    counts = np.diff(np.ceil(ends - u), prepend=0.0).astype(np.int64)
    return rng.permutation(np.repeat(order, counts))


def worker_draws(draws: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Worker ``rank``'s part of an epoch's draws: every ``world``-th from ``rank``, N // world of them (equal
    parts, as Ray Train's equal split gives; the last N % world draws are left out)."""
    return draws[rank::world][: len(draws) // world]


def manifest_weights(shards: str, split: str, produced_by: str) -> tuple[list[str], np.ndarray]:
    """(keys, weights) of ``split``'s samples in manifest order; weight 1 each if the manifest has no
    ``weight`` column (a build from before weights). Bad weights are a ``DataError``."""
    from pipelines.splits import read_manifest

    path = f"{storage.redact(shards)}/manifest.parquet"
    table = read_manifest(shards, produced_by, ["key", "split", "weight"])
    names = table.column_names
    rows = [i for i, s in enumerate(table.column("split").to_pylist()) if s == split]
    if not rows:
        raise DataError(f"data.shards: {path} lists no {split} samples")
    keys = [table.column("key")[i].as_py() for i in rows]
    if "weight" not in names:
        return keys, np.ones(len(keys))
    weights = [table.column("weight")[i].as_py() for i in rows]
    if any(v is None for v in weights):
        i = next(i for i, v in enumerate(weights) if v is None)
        raise DataError(f"weight: {path} has no weight for {split} sample {keys[i]!r}")
    try:
        return keys, check_weights(weights, keys)
    except DataError as err:
        raise DataError(f"{path} ({split}): {err}") from None


@functools.lru_cache(maxsize=4096)
def _index(url: str, stat: tuple) -> dict[str, list[tuple[str, int, int]]]:
    out: dict[str, list[tuple[str, int, int]]] = {}
    with storage.open_input(url) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, suffix = os.path.basename(member.name).partition(".")
            out.setdefault(key, []).append((suffix, member.offset_data, member.size))
    return out


def shard_index(url: str) -> dict[str, list[tuple[str, int, int]]]:
    """``{key: [(member suffix, byte offset, size), ...]}`` of one uncompressed tar shard, from its headers
    (cached per process while the file's size and mtime stay the same)."""
    return _index(url, storage.stat(url))


def read_members(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ``{__key__, __url__, members: JSON [[suffix, offset, size], ...]}`` -> WebDataset rows as
    ``read_webdataset(decoder=None)`` gives them: ``__key__``, ``__url__`` and one bytes column per suffix."""
    keys, urls = list(batch["__key__"]), list(batch["__url__"])
    out: dict[str, list] = {"__key__": keys, "__url__": urls}
    handles: dict[str, object] = {}
    try:
        for i, (key, url) in enumerate(zip(keys, urls)):
            if url not in handles:
                handles[url] = storage.open_input(url)
            f = handles[url]
            for suffix, offset, size in json.loads(batch["members"][i]):
                f.seek(offset)
                data = f.read(size)
                if len(data) != size:
                    raise DataError(f"{url}: sample {key!r} member {suffix!r} is cut short "
                                    f"({len(data)} of {size} bytes)")
                out.setdefault(suffix, [None] * len(keys))[i] = data
    finally:
        for f in handles.values():
            f.close()
    return {k: _objects(v) for k, v in out.items()}


def _objects(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)   # 1-D whatever the values are
    arr[:] = values
    return arr


def locate(shards: str, split: str, produced_by: str, keys: list[str],
           suffixes: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Per key (in order): (shard url, JSON of its selected members' [suffix, offset, size]). A key the
    manifest lists that no shard holds, or a shard sample the manifest does not list, is a ``DataError``."""
    where: dict[str, tuple[str, str]] = {}
    for url in split_files(shards, split, produced_by):
        for key, members in shard_index(url).items():
            where[key] = (url, json.dumps([m for m in members if suffixes(m[0])]))
    missing = [k for k in keys if k not in where]
    if missing:
        raise DataError(f"data.shards: {len(missing)} {split} samples of the manifest are in no {split}/*.tar of "
                        f"{shards!r}, e.g. {missing[:3]}")
    extra = set(where) - set(keys)
    if extra:
        raise DataError(f"data.shards: {len(extra)} samples of {split}/*.tar have no manifest row (and so no "
                        f"weight), e.g. {sorted(extra)[:3]}")
    return [where[k] for k in keys]


def ordered(ds):
    """``ds`` executed in order (``preserve_order``), as the training job's DataConfig does for its datasets."""
    ds.context.execution_options.preserve_order = True
    return ds


def epoch_dataset(shards: str, split: str, produced_by: str, suffixes: Callable[[str], bool], seed: int,
                  epoch: int, rank: int, world: int, read_cpus: float, read_batch: int):
    """Worker ``rank``'s samples of weighted ``epoch`` as WebDataset rows (raw member bytes, the members whose
    suffix ``suffixes`` accepts), in draw order; the loaders map their decoding over it."""
    import ray

    keys, weights = manifest_weights(shards, split, produced_by)
    where = locate(shards, split, produced_by, keys, suffixes)
    mine = worker_draws(epoch_draws(weights, seed, epoch), rank, world)
    items = [{"__key__": keys[i], "__url__": where[i][0], "members": where[i][1]} for i in mine]
    if not items:
        raise DataError(f"data.shards: {len(keys)} {split} samples leave worker {rank} of {world} none")
    blocks = min(len(items), 1000, -(-len(items) // read_batch))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    return ds.map_batches(read_members, batch_size=read_batch, batch_format="numpy", num_cpus=read_cpus)
