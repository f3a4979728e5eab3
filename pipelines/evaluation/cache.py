"""Real-video measurements, computed once per (dataset, measurement) and reused by every later evaluation.

    fp = dataset_fingerprint("shards", "val")
    cache = FeatureCache("work/feature-cache", fp, "fdd", extractor.fingerprint + "|frames=4")
    cache.get(key) or cache.put(key, arrays)

A measurement's identity is what determines its numbers: the dataset (its manifest and the split's shard files and
index), the extractor (its name, resolution and weights: ``FeatureExtractor.fingerprint``) and how frames are
picked. Entries are one ``npz`` per sample key, written to a temporary name and renamed, so concurrent
evaluations share a cache safely and a stopped one leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from gaia2 import storage
from pipelines.evaluation.measure import pack, unpack


def _hash_file(h, path: str, chunk: int = 1 << 20) -> None:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)


def dataset_fingerprint(shards: str, split: str) -> str:
    """SHA-256 over the build's manifest, the split's index files (keys, sizes) and its shard files' names and
    contents: a rebuilt or changed split gets a new fingerprint, a copy of the same build the same one, wherever
    it is (``shards`` a local directory or an object-storage URI: every byte is read, as it is from a disk)."""
    h = hashlib.sha256(split.encode())
    index = [f"index/{n}" for n in storage.list_files(storage.join(shards, "index"), recursive=False)
             if n.startswith(f"{split}-") and not n.endswith(storage.PARTIAL)]
    tars = [f"{split}/{n}" for n in storage.list_files(storage.join(shards, split), recursive=False)
            if n.endswith(".tar")]
    for rel in ["manifest.parquet", *index, *tars]:   # sorted within each group, as listed
        location = storage.join(shards, rel)
        if rel == "manifest.parquet" and not storage.is_file(location):
            continue
        h.update(rel.encode() + b"\0")
        with storage.open_input(location) as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def path_digest(path: str) -> str:
    """SHA-256 of a file's bytes, or of every file under a directory (relative names and bytes)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, path).encode() + b"\0")
                _hash_file(h, full)
    else:
        _hash_file(h, path)
    return h.hexdigest()


class FeatureCache:
    """``<root>/<dataset fingerprint>/<measurement>-<its fingerprint>/<key>.npz``; ``root`` is a local directory
    (entries are published by ``os.replace``, which concurrent evaluations sharing a disk rely on)."""

    def __init__(self, root: str, dataset: str, measurement: str, fingerprint: str) -> None:
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
        self.dir = os.path.join(root, dataset[:20], f"{measurement}-{digest}")
        self.measurement, self.fingerprint = measurement, fingerprint

    def path(self, key: str) -> str:
        return os.path.join(self.dir, f"{key}.npz")

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        try:
            with open(self.path(key), "rb") as f:
                return unpack(f.read())
        except (OSError, ValueError):   # absent, or unreadable (then recomputed and replaced)
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        final = self.path(key)
        tmp = f"{final}.{os.getpid()}.{os.urandom(4).hex()}.partial"
        with open(tmp, "wb") as f:
            f.write(pack(arrays))
        os.replace(tmp, final)
        fp = os.path.join(self.dir, "fingerprint.txt")
        if not os.path.exists(fp):
            with open(f"{fp}.{os.getpid()}.partial", "w") as f:
                f.write(self.fingerprint + "\n")
            os.replace(f"{fp}.{os.getpid()}.partial", fp)


def select(arrays: dict[str, np.ndarray], metric: str, cameras: list[str]) -> np.ndarray:
    """The rows of ``arrays[metric]`` that came from ``cameras`` (a generation's rig may keep fewer cameras than
    the real sample has)."""
    names = [str(c) for c in arrays["cameras"]]
    keep = [names.index(c) for c in cameras if c in names]
    rows = np.isin(arrays[f"{metric}.camera"], keep)
    return arrays[metric][rows]

